use isotest::isolated;

#[isolated(timeout = "30")]
fn no_unit() {}

fn main() {}
