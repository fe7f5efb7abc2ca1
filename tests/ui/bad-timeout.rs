use isotest::isolated;

#[isolated(timeout = "30 seconds")]
fn spelled_out() {}

fn main() {}
