use isotest::isolated;

#[isolated]
async fn asynchronous() {}

fn main() {}
