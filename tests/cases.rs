//! The data-driven cases under fixtures/cases, one test each, each in a fresh sandbox.

fn main() {
    isotest::harness::main(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/cases"));
}
