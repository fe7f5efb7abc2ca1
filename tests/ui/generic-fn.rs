use isotest::isolated;

#[isolated]
fn generic<T: Default>() {
    let _ = T::default();
}

fn main() {}
