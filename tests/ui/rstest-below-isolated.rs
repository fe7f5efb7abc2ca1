use isotest::isolated;

#[isolated]
#[rstest::rstest]
fn cases_made_after_isolation() {}

fn main() {}
