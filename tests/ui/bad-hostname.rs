use isotest::isolated;

#[isolated(hostname = "web_1")]
fn underscore() {}

fn main() {}
