use isotest::isolated;

#[isolated(allow_leaks = ["processes", "files"])]
fn unknown_check() {}

fn main() {}
