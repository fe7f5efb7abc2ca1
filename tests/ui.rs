//! Compile-fail tests of `#[isolated]`: one mistake per file, named after the mistake, with the
//! compiler's message beside it. Regenerate with `TRYBUILD=overwrite cargo test --test ui` and
//! read every changed `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
