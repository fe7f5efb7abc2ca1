//! Integration tests: one binary, one module per area. Every test here runs in real
//! namespaces; set `ISOTEST_ROOTFS` to a root filesystem (the README says how).

mod binds;
mod cli;
mod command;
mod core;
mod escape;
mod faults;
mod fixtures;
mod nextest;
mod rootfs;
mod teardown;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The lower layer the tests' sandboxes start from: `ISOTEST_ROOTFS` (else the default),
/// resolved through isotest's cache like the tests resolve it.
pub fn rootfs_dir() -> PathBuf {
    let spec = isotest::rootfs::spec_or_default(None);
    isotest::rootfs::resolve(&spec).unwrap_or_else(|e| panic!("root filesystem {spec:?}: {e}"))
}

/// Runs one test of this binary in a child process, as libtest would run it alone, and returns
/// what it printed. Used to observe a sandboxed test from the host: its exit status, its output,
/// and what it left behind.
pub fn run_test(name: &str, extra_env: &[(&str, &str)]) -> Output {
    test_command(name, extra_env)
        .output()
        .expect("run the test binary")
}

/// The command [`run_test`] runs: its output as it comes (`--nocapture`).
pub fn test_command(name: &str, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = captured_test_command(name, extra_env);
    cmd.arg("--nocapture");
    cmd
}

/// One test of this binary, ignored or not, alone, with libtest capturing its output.
fn captured_test_command(name: &str, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([name, "--exact", "--include-ignored", "--test-threads=1"]);
    cmd.envs(extra_env.iter().copied());
    cmd
}

/// stdout and stderr of a run, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs one test of this binary by itself, ignored or not, and returns whether it passed and
/// what it printed. For the tests that fail on purpose: the outer test asserts on how.
pub fn run_alone(name: &str, env: &[(&str, &str)]) -> (bool, String) {
    let out = captured_test_command(name, env)
        .output()
        .expect("run the test binary");
    let text = text(&out);
    assert!(
        text.contains("running 1 test"),
        "`{name}` is not one test of this binary:\n{text}"
    );
    (out.status.success(), text)
}

/// Reads a running test's stdout until it printed `line`; returns what it printed so far.
pub fn wait_for_line(child: &mut std::process::Child, line: &str) -> String {
    use std::io::Read;
    let stdout = child.stdout.as_mut().expect("stdout piped");
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains(line) {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "the test ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}
