use isotest::isolated;

#[isolated(hostname = "web1", timeout = "5s", hostname = "web2")]
fn twice() {}

fn main() {}
