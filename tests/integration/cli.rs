//! The `isotest` command line, run as a real process.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn isotest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isotest"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn run_passes_output_and_exit_code_through() {
    let out = isotest(&[
        "run",
        "--hostname",
        "cli-host",
        "--",
        "/bin/sh",
        "-c",
        "echo $$ $(hostname); echo e >&2; exit 7",
    ]);
    assert_eq!(text(&out.stdout), "1 cli-host\n");
    assert_eq!(text(&out.stderr), "e\n");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn run_sets_env_and_binds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "from host\n").unwrap();
    let bind = format!("{}:/mnt/host:ro", dir.path().display());
    let out = isotest(&[
        "run",
        "--env",
        "GREETING=hi",
        "--bind",
        &bind,
        "--cwd",
        "/mnt/host",
        "--",
        "/bin/sh",
        "-c",
        "echo $GREETING; cat f; touch g 2>/dev/null || echo read-only",
    ]);
    assert_eq!(
        text(&out.stdout),
        "hi\nfrom host\nread-only\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_reports_a_missing_program_with_status_125() {
    let out = isotest(&["run", "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"no-such-program\"") && err.contains("root filesystem"),
        "{err}"
    );
}

#[test]
fn run_rejects_an_empty_or_missing_rootfs_before_any_fork() {
    for (rootfs, shown) in [("", "rootfs \"\""), ("/no/such/rootfs", "/no/such/rootfs")] {
        let out = isotest(&["run", "--rootfs", rootfs, "--", "true"]);
        assert!(!out.status.success(), "{rootfs:?}");
        let err = text(&out.stderr);
        assert!(err.contains(shown), "{rootfs:?}: {err}");
    }
}

#[test]
fn a_missing_program_names_the_program_and_the_rootfs() {
    let out = isotest(&["run", "--", "/usr/bin/no-such-tool", "x"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    let spec = isotest::rootfs::spec_or_default(None);
    assert!(
        err.contains("\"/usr/bin/no-such-tool\"") && err.contains(&spec),
        "{err}"
    );
}

#[test]
fn run_times_out_with_status_124() {
    let out = isotest(&["run", "--timeout", "300ms", "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(
        text(&out.stderr).contains("timed out after 300ms"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_rejects_bad_values_naming_them() {
    for (args, bad) in [
        (&["run", "--bind", "nocolon", "--", "true"][..], "nocolon"),
        (&["run", "--bind", "/a:/b:rx", "--", "true"][..], "rx"),
        (&["run", "--timeout", "0s", "--", "true"][..], "0s"),
        (&["run", "--timeout", "30", "--", "true"][..], "no unit"),
        (
            &["run", "--hostname", "bad_name", "--", "true"][..],
            "bad_name",
        ),
        (&["run", "--env", "novalue", "--", "true"][..], "novalue"),
        (
            &["run", "--hostname", "", "--", "true"][..],
            "hostname is empty",
        ),
        (
            &["run", "--hostname", &"h".repeat(70), "--", "true"][..],
            &"h".repeat(70),
        ),
        (
            &["run", "--hostname", "web\u{1}", "--", "true"][..],
            r#""web\u{1}""#,
        ),
        (&["run", "--timeout", "", "--", "true"][..], "\"\""),
        (&["run", "--timeout", "soon", "--", "true"][..], "soon"),
        (
            &["run", "--timeout", "99999999999999999999s", "--", "true"][..],
            "99999999999999999999s",
        ),
        (&["run", "--bind", "", "--", "true"][..], "\"\""),
        (&["run", "--bind", ":/x", "--", "true"][..], ":/x"),
        (&["run", "--env", "", "--", "true"][..], "\"\""),
        (&["run", "--env", "=v", "--", "true"][..], "=v"),
        (&["run", "--tmpfs-size", "lots", "--", "true"][..], "lots"),
        (&["run", "--tmpfs-size", "", "--", "true"][..], "\"\""),
        (&["run", "--pids-max", "0", "--", "true"][..], "0"),
        (&["run", "--pids-max", "many", "--", "true"][..], "many"),
        (&["run"][..], "PROGRAM"),
    ] {
        let out = isotest(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(bad), "{args:?}: {err}");
    }
}

#[test]
fn run_keep_writes_the_upper_layer_to_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("changes");
    let out = isotest(&[
        "run",
        "--keep",
        keep.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "echo kept > /etc/kept && rm /etc/hostname",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(keep.join("upper/etc/kept")).unwrap(),
        "kept\n"
    );
    // A deletion is a whiteout: a 0/0 character device.
    let ft = std::fs::symlink_metadata(keep.join("upper/etc/hostname"))
        .unwrap()
        .file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&ft));
    assert!(
        !keep.join("work").exists(),
        "overlayfs' work dir left behind"
    );
}

#[test]
fn help_describes_each_command() {
    let out = isotest(&["--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("run") && help.contains("doctor"), "{help}");
    let out = isotest(&["run", "--help"]);
    let help = text(&out.stdout);
    for want in [
        "--rootfs",
        "--hostname",
        "--bind",
        "SRC:DST[:ro|rw]",
        "--env",
        "--timeout",
        "--keep",
        "PROGRAM",
        "128+N",
    ] {
        assert!(help.contains(want), "run --help lacks {want}:\n{help}");
    }
    assert!(text(&isotest(&["doctor", "--help"]).stdout).contains("fix"));
}

#[test]
fn doctor_checks_this_machine() {
    let out = isotest(&["doctor"]);
    let report = text(&out.stdout);
    for want in [
        "kernel",
        "user namespaces",
        "overlayfs",
        "pivot_root",
        "sandbox in a user namespace",
        "rootfs builder",
        "process limit",
        "cache",
    ] {
        assert!(
            report.lines().any(|l| l.contains(want)),
            "no {want} line:\n{report}"
        );
    }
    // This machine runs sandboxes (every other test here needs it).
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report
            .lines()
            .all(|l| l.starts_with("ok") || l.starts_with("warn")),
        "{report}"
    );
    // Where root can write the cgroup v1 pids hierarchy, that is the limit; elsewhere it may be
    // a delegated v2 cgroup or the rlimit alone (with a warning).
    let limit = report
        .lines()
        .find(|l| l.contains("process limit"))
        .unwrap();
    if nix::unistd::getuid().is_root() && std::path::Path::new("/sys/fs/cgroup/pids").is_dir() {
        assert!(
            limit.starts_with("ok") && limit.contains("pids cgroup"),
            "{limit}"
        );
    } else {
        assert!(
            limit.contains("RLIMIT_NPROC") || limit.contains("pids cgroup"),
            "{limit}"
        );
    }
}

#[test]
fn doctor_names_the_cache_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_isotest"))
        .arg("doctor")
        .env("ISOTEST_CACHE", "/nonexistent/isotest-cache")
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("/nonexistent/isotest-cache (not created yet)"));
}

/// Everything the pty master has produced so far.
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn wait_for(&self, want: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let seen = text(&self.0.lock().unwrap());
            if seen.contains(want) || start.elapsed() > timeout {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn run_is_interactive_on_a_terminal() {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = Command::new(env!("CARGO_BIN_EXE_isotest"))
        .args(["run", "--hostname", "pty-host", "--", "/bin/bash"])
        .env("TERM", "dumb")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = reader.read(&mut b) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&b[..n]);
        }
    });
    let screen = Screen(buf);
    let t = Duration::from_secs(20);
    // The typed line echoes back verbatim; only the shell's answer has the expanded text.
    master.write_all(b"echo \"h=$(hostname)\"\n").unwrap();
    let seen = screen.wait_for("h=pty-host\r\n", t);
    assert!(seen.contains("h=pty-host\r\n"), "{seen}");
    master.write_all(b"echo \"p=$$\"\n").unwrap();
    let seen = screen.wait_for("p=1\r\n", t);
    assert!(seen.contains("p=1\r\n"), "{seen}");
    // The terminal has a name in there: /dev/console, as in a container.
    master.write_all(b"echo \"t=$(tty)\"\n").unwrap();
    let seen = screen.wait_for("t=/dev/console\r\n", t);
    assert!(seen.contains("t=/dev/console\r\n"), "{seen}");
    // Ctrl-C reaches the program (bash drops the line), not isotest.
    // A duration no other run of this test uses at the same time.
    let token = (100_000 + std::process::id()).to_string();
    master
        .write_all(format!("sleep {token}\n").as_bytes())
        .unwrap();
    // Once the sleep runs (the host sees the sandbox's processes), it is the foreground job.
    let start = Instant::now();
    while !sleep_runs(&token) {
        assert!(start.elapsed() < t, "sleep never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    master.write_all(b"\x03").unwrap();
    master.write_all(b"echo \"after=$((40+2))\"\n").unwrap();
    let seen = screen.wait_for("after=42\r\n", t);
    assert!(seen.contains("after=42\r\n"), "{seen}");
    master.write_all(b"exit 3\n").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < t,
            "isotest did not exit:\n{}",
            screen.wait_for("", Duration::ZERO)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3));
}

/// A process `sleep ARG` runs on the host (sandboxes' processes are visible from outside).
fn sleep_runs(arg: &str) -> bool {
    let want = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc").unwrap().any(|e| {
        let Ok(e) = e else { return false };
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes())
    })
}
