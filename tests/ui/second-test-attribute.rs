use isotest::isolated;

#[isolated]
#[test]
#[test]
fn two_tests() {}

fn main() {}
