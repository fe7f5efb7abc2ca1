//! What `#[isolated]` produces compiles and runs as the test it was written as: one test per
//! function (per case under rstest), with `Result` and `#[should_panic]` behaving as without it.

use isotest::isolated;
use rstest::rstest;

#[isolated]
fn plain() {
    assert_eq!(1 + 1, 2);
}

#[isolated(hostname = "web1", timeout = "5s")]
fn with_arguments() {
    assert!(module_path!().ends_with("macro_expansion"));
}

#[isolated(
    hostname = "db.example.org",
    rootfs = "debian:bookworm",
    timeout = "250ms",
    privileged = false,
    writes = ["/etc/myapp", "/var/lib/x"],
    bind = ["fixtures/data:/data:ro", "/src:/dst"],
    allow_leaks = ["processes", "mounts"],
)]
#[ignore = "compile-only: every argument is accepted; the bind sources do not exist"]
fn every_argument() {}

#[isolated]
fn returns_result() -> Result<(), String> {
    let n: u32 = "42".parse().map_err(|e| format!("{e}"))?;
    assert_eq!(n, 42);
    Ok(())
}

#[isolated]
#[should_panic(expected = "boom")]
fn should_panic_keeps_its_expectation() {
    panic!("boom");
}

#[isolated]
#[test]
fn explicit_test_attribute_below() {}

#[isolated]
#[ignore = "ignored tests stay ignored"]
fn ignored() {
    panic!("an ignored test ran");
}

#[rstest]
#[case(1)]
#[case(2)]
#[isolated]
fn cased(#[case] x: u32) {
    assert!(x == 1 || x == 2);
}

#[rstest]
#[isolated(hostname = "web1")]
fn rstest_without_cases() {}

/// Each generated case is one test: listing this binary's tests shows `cased::case_1` and
/// `cased::case_2` exactly once each, and every other test once.
#[test]
fn one_test_per_function_and_case() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "cased::case_1",
            "cased::case_2",
            "every_argument",
            "explicit_test_attribute_below",
            "ignored",
            "one_test_per_function_and_case",
            "plain",
            "returns_result",
            "rstest_without_cases",
            "should_panic_keeps_its_expectation",
            "with_arguments",
        ]
    );
}
