//! Integration tests: one binary, one module per area.

mod binds;
mod fixtures;
mod teardown;

/// Runs one test of this binary by itself, ignored or not, and returns whether it passed and
/// what it printed. For the tests that fail on purpose: the outer test asserts on how.
pub fn run_alone(name: &str, env: &[(&str, &str)]) -> (bool, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--include-ignored", "--test-threads=1"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("running 1 test"),
        "`{name}` is not one test of this binary:\n{text}"
    );
    (out.status.success(), text)
}
