use isotest::isolated;

const HOST: &str = "web1";

#[isolated(hostname = HOST)]
fn constant() {}

fn main() {}
