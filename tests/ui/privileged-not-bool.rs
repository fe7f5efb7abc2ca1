use isotest::isolated;

#[isolated(privileged = "yes")]
fn quoted_bool() {}

fn main() {}
