//! The Sandbox API: a program from the root filesystem in a fresh sandbox.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use isotest::{Error, Sandbox, Stdio};

fn sandbox() -> Sandbox {
    Sandbox::default().hostname("cmd-test")
}

fn sh(script: &str) -> isotest::Command {
    sandbox().command("/bin/sh", ["-c", script])
}

#[test]
fn output_collects_stdout_stderr_and_status() {
    let out = sh("echo out; echo err >&2; exit 4").output().unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(out.status.signal(), None);
    assert!(!out.status.success());
}

#[test]
fn status_passes_the_exit_code_through() {
    let status = sh("exit 42").stdout(Stdio::null()).status().unwrap();
    assert_eq!(status.code(), Some(42));
    assert!(sh("true").status().unwrap().success());
}

#[test]
fn the_program_is_pid_1_with_the_sandbox_hostname() {
    let out = sh("echo $$ $(hostname)").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 cmd-test\n");
}

#[test]
fn programs_are_looked_up_in_the_sandbox_path() {
    let out = sandbox().command("echo", ["found"]).output().unwrap();
    assert_eq!(out.stdout, b"found\n");
}

#[test]
fn a_killed_program_reports_the_signal() {
    let mut child = sandbox()
        .command("sleep", ["30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(status.code(), None);
    assert_eq!(status.shell_code(), 128 + libc::SIGKILL);
}

#[test]
fn a_missing_program_is_an_error_naming_it_and_the_rootfs() {
    let rootfs = std::env::var("ISOTEST_ROOTFS").expect("set ISOTEST_ROOTFS to a root filesystem");
    let rootfs = rootfs.as_str();
    for program in ["/usr/bin/no-such-program", "no-such-program"] {
        let e = Sandbox::default()
            .rootfs(rootfs)
            .command(program, [] as [&str; 0])
            .status()
            .unwrap_err();
        assert!(matches!(e, Error::Exec { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(program) && text.contains(rootfs) && text.contains("ENOENT"),
            "{text}"
        );
    }
    // Found on the host's PATH is not found: it must exist inside the root filesystem.
    let e = Sandbox::default()
        .rootfs(rootfs)
        .command("/bin/", [] as [&str; 0])
        .status()
        .unwrap_err();
    assert!(e.to_string().contains("\"/bin/\""), "{e}");
}

#[test]
fn the_timeout_kills_the_sandbox() {
    let start = Instant::now();
    let e = sandbox()
        .timeout(Duration::from_millis(300))
        .command("/bin/sh", ["-c", "sleep 30 & sleep 30"])
        .output()
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert!(e.to_string().contains("300ms"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_environment_is_clean_plus_what_was_set() {
    std::env::set_var("ISOTEST_HOST_ONLY", "leak");
    let out = sandbox()
        .env("A", "1")
        .command("/usr/bin/env", [] as [&str; 0])
        .env("B", "2")
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = env.lines().filter(|l| !l.starts_with("TERM=")).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "A=1",
            "B=2",
            "HOME=/root",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
}

#[test]
fn cwd_defaults_to_root_and_can_be_set() {
    assert_eq!(sh("pwd").output().unwrap().stdout, b"/\n");
    let out = sandbox()
        .cwd("/etc")
        .command("/bin/pwd", [] as [&str; 0])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"/etc\n");
    let out = sh("pwd").current_dir("/usr/share").output().unwrap();
    assert_eq!(out.stdout, b"/usr/share\n");
}

#[test]
fn piped_stdin_and_stdout_through_spawn() {
    let mut child = sandbox()
        .command("/usr/bin/tr", ["a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello sandbox\n")
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "HELLO SANDBOX\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn writes_stay_in_the_overlay() {
    let marker = crate::rootfs_dir().join("etc/isotest-command-marker");
    let out = sh("echo x > /etc/isotest-command-marker && rm /etc/hostname && cat /etc/isotest-command-marker")
        .output()
        .unwrap();
    assert_eq!(
        out.stdout,
        b"x\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !marker.exists(),
        "{} reached the root filesystem",
        marker.display()
    );
    assert!(crate::rootfs_dir().join("etc/hostname").exists());
}

#[test]
fn invalid_options_are_named_before_anything_runs() {
    let e = Sandbox::default()
        .hostname("bad_name")
        .command("true", [] as [&str; 0])
        .status()
        .unwrap_err();
    assert!(e.to_string().contains("bad_name"), "{e}");
    let e = Sandbox::default()
        .timeout(Duration::ZERO)
        .command("true", [] as [&str; 0])
        .status()
        .unwrap_err();
    assert!(e.to_string().contains("timeout"), "{e}");
}
