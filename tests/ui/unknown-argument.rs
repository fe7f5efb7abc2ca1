use isotest::isolated;

#[isolated(hostnme = "web1")]
fn misspelled() {}

fn main() {}
