use isotest::isolated;

#[isolated]
fn takes_a_case(x: u32) {
    assert!(x > 0);
}

fn main() {}
