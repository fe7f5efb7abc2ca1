use isotest::isolated;

#[isolated(writes = ["/etc/myapp", "var/lib/myapp"])]
fn relative() {}

fn main() {}
