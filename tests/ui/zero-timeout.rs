use isotest::isolated;

#[isolated(timeout = "0s")]
fn zero() {}

fn main() {}
