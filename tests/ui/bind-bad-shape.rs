use isotest::isolated;

#[isolated(bind = ["fixtures/data"])]
fn no_destination() {}

fn main() {}
