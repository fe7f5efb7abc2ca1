//! Escape attempts from inside a sandbox, each observed from the host where it matters.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use isotest::isolated;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::{run_alone, test_command};

/// The optional fields of each line of a mountinfo (between field 6 and `-`).
fn propagation(mountinfo: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-").unwrap();
            (f[4].to_string(), f[6..sep].join(" "))
        })
        .collect()
}

#[isolated]
fn chroot_dotdot_stays_in_the_sandbox() {
    let marker = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    fs::create_dir("/x").unwrap();
    // The classic breakout: chroot without chdir leaves the working directory outside the new
    // root, from where `..` climbs as far as the real root of this mount namespace.
    nix::unistd::chroot("/x").unwrap();
    for _ in 0..64 {
        nix::unistd::chdir("..").unwrap();
    }
    nix::unistd::chroot(".").unwrap();
    nix::unistd::chdir("/").unwrap();
    assert!(!Path::new(marker).exists(), "reached the host's {marker}");
    assert!(Path::new("/x").is_dir(), "not back at the sandbox's root");
    assert!(fs::read_to_string("/etc/os-release")
        .unwrap()
        .contains("bookworm"));
}

#[isolated]
fn a_fresh_procfs_and_sysrq_trigger_are_refused() {
    fs::create_dir_all("/tmp/p").unwrap();
    let fresh = mount(
        Some("proc"),
        "/tmp/p",
        Some("proc"),
        MsFlags::empty(),
        None::<&str>,
    );
    assert!(fresh.is_err(), "mounted a fresh procfs");
    assert!(!Path::new("/tmp/p/sysrq-trigger").exists());
    let write = fs::OpenOptions::new()
        .write(true)
        .open("/proc/sysrq-trigger")
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"h"));
    assert!(write.is_err(), "wrote /proc/sysrq-trigger");
}

#[test]
fn programs_are_locked_too() {
    // Command mode pivots in the child before exec; it is then locked like a test.
    let script = "mkdir -p /tmp/p; \
        if mount -t proc proc /tmp/p 2>/dev/null; then echo fresh-proc; fi; \
        if umount -l /proc/sys 2>/dev/null; then echo unmasked; fi; \
        if mount -o remount,bind,rw /proc/sys 2>/dev/null; then echo remounted; fi; \
        if echo h 2>/dev/null >/proc/sysrq-trigger; then echo sysrq; fi; \
        if mount -t tmpfs t /mnt; then echo new-tmpfs; fi; \
        for f in /proc/kcore /proc/keys /proc/timer_list; do \
            [ -e $f ] && [ $(head -c1 $f | wc -c) != 0 ] && echo $f; done; \
        ls /sys/firmware | wc -l; umask; \
        grep NoNewPrivs /proc/self/status";
    let out = isotest::Sandbox::default()
        .command("/bin/sh", ["-c", script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "new-tmpfs\n0\n0022\nNoNewPrivs:\t1\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[isolated]
fn kernel_files_are_masked_and_knobs_read_only() {
    for file in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if Path::new(file).exists() {
            assert_eq!(fs::read(file).unwrap(), b"", "{file} not masked");
        }
    }
    for dir in ["/sys/firmware", "/proc/acpi", "/proc/scsi"] {
        if Path::new(dir).exists() {
            assert_eq!(fs::read_dir(dir).unwrap().count(), 0, "{dir} not masked");
            assert!(fs::write(format!("{dir}/x"), "").is_err());
        }
    }
    for knob in [
        "/proc/sys/kernel/hostname",
        "/proc/sys/net/ipv4/ip_default_ttl",
        "/proc/irq/default_smp_affinity",
    ] {
        assert!(
            fs::OpenOptions::new().write(true).open(knob).is_err(),
            "{knob} writable"
        );
    }
    // The test's process starts with a umask of 0022 and no way to gain privileges on exec.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Umask:\t0022"), "{status}");
    assert_eq!(
        std::env::var("PATH").unwrap(),
        isotest::DEFAULT_PATH,
        "PATH is the sandbox's"
    );
    assert_eq!(std::env::var("HOME").unwrap(), "/root");
}

#[isolated(proc_sys = "rw")]
fn proc_sys_rw_leaves_proc_sys_writable() {
    // No read-only mount over /proc/sys.
    let mounts = isotest::fixtures::mounts();
    assert_eq!(
        mounts.get("/proc/sys"),
        None,
        "/proc/sys is still a mount of its own"
    );
    assert!(!mounts.get("/proc").unwrap().read_only());
    if !isotest::fixtures::sandbox().rootless {
        // The network namespace is the sandbox's own: this knob is safe to write. (Rootless,
        // the kernel lets only the host's root write sysctls outside the sandbox's own user
        // namespace, so /proc/sys stays unwritable there anyway.)
        let knob = "/proc/sys/net/ipv4/ip_default_ttl";
        fs::write(knob, "42").unwrap();
        assert_eq!(fs::read_to_string(knob).unwrap().trim(), "42");
    }
}

#[isolated]
#[ignore = "writes to its executable for the_test_binary_is_unchanged_after_exe_writes"]
fn writes_to_its_executable() {
    for exe in ["/proc/self/exe", "/proc/1/exe"] {
        let open = fs::OpenOptions::new().write(true).open(exe);
        assert!(open.is_err(), "{exe} opened for writing");
    }
    println!("exe writes refused");
}

#[test]
fn the_test_binary_is_unchanged_after_exe_writes() {
    use sha2::Digest;
    let exe = std::env::current_exe().unwrap();
    let before = sha2::Sha256::digest(fs::read(&exe).unwrap());
    let (passed, text) = run_alone("escape::writes_to_its_executable", &[]);
    assert!(passed, "{text}");
    let after = sha2::Sha256::digest(fs::read(&exe).unwrap());
    assert_eq!(before, after, "the test binary changed");
}

#[isolated]
#[ignore = "kills everything it can for kill_minus_one_stays_in_the_sandbox"]
fn kills_everything_it_can() {
    let mut sleeper = Command::new("/bin/sleep").arg("4244").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), nix::sys::signal::SIGKILL).unwrap();
    let status = sleeper.wait().unwrap();
    panic!("after kill(-1, SIGKILL) the sandbox's sleep ended with {status}");
}

#[test]
fn kill_minus_one_stays_in_the_sandbox() {
    let mut host = Command::new("/bin/sleep").arg("4245").spawn().unwrap();
    let (passed, text) = run_alone("escape::kills_everything_it_can", &[]);
    assert!(!passed, "{text}");
    assert!(
        text.contains("after kill(-1, SIGKILL) the sandbox's sleep ended with signal: 9 (SIGKILL)"),
        "{text}"
    );
    assert!(
        host.try_wait().unwrap().is_none(),
        "a host process died of the sandbox's kill(-1)"
    );
    host.kill().unwrap();
    host.wait().unwrap();
}

#[isolated]
#[ignore = "holds a tmpfs for mounts_inside_never_reach_the_host"]
fn holds_a_tmpfs() {
    for (point, fields) in propagation(&fs::read_to_string("/proc/self/mountinfo").unwrap()) {
        assert!(!fields.contains("shared:"), "{point} is shared: {fields}");
    }
    mount(
        Some("isotest-escape-marker"),
        "/mnt",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    println!("mounted");
    std::thread::sleep(Duration::from_millis(1500));
    umount2("/mnt", MntFlags::empty()).unwrap();
}

#[test]
fn mounts_inside_never_reach_the_host() {
    let mut child = test_command("escape::holds_a_tmpfs", &[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = crate::wait_for_line(&mut child, "mounted");
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host.contains("isotest-escape-marker"), "{host}");
    let _ = child.stdout.as_mut().unwrap().read_to_string(&mut seen);
    assert!(child.wait().unwrap().success(), "{seen}");
}

/// `shmget(0x15074e57)`, as a decimal key in /proc/sysvipc/shm.
const SHM_KEY: &str = "352800343";

#[isolated]
#[ignore = "holds a SysV shared memory segment for ipc_objects_stay_in_the_sandbox"]
fn holds_a_shm_segment() {
    let out = Command::new("perl")
        .args([
            "-e",
            "shmget(0x15074e57, 4096, 01600) // die \"shmget: $!\\n\"",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shm = fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        shm.lines()
            .any(|l| l.split_whitespace().next() == Some(SHM_KEY)),
        "{shm}"
    );
    println!("ipc held");
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn ipc_objects_stay_in_the_sandbox() {
    let mut child = test_command("escape::holds_a_shm_segment", &[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = crate::wait_for_line(&mut child, "ipc held");
    let shm = fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        !shm.lines()
            .any(|l| l.split_whitespace().next() == Some(SHM_KEY)),
        "{shm}"
    );
    let _ = child.stdout.as_mut().unwrap().read_to_string(&mut seen);
    assert!(child.wait().unwrap().success(), "{seen}");
}

#[isolated]
#[ignore = "connects to the host's listener for the_hosts_loopback_is_unreachable"]
fn connects_to_the_host() {
    let port = std::env::var("ISOTEST_HOST_PORT").unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(r.is_err(), "connected to the host's 127.0.0.1:{port}");
}

#[test]
fn the_hosts_loopback_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let (passed, text) = run_alone(
        "escape::connects_to_the_host",
        &[("ISOTEST_HOST_PORT", &port)],
    );
    assert!(passed, "{text}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "a connection arrived");
}

const TIOCSTI: &str = "perl -e 'my $c = \"x\"; ioctl(STDIN, 0x5412, $c) and die \"TIOCSTI worked\\n\"; print \"refused: $!\\n\"'";

#[isolated]
fn tiocsti_on_stdin_fails() {
    let out = Command::new("/bin/sh")
        .args(["-c", TIOCSTI])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tiocsti_never_reaches_the_hosts_terminal() {
    // A program whose stdin is the host's terminal (a pty here) cannot push input into it.
    let pty = nix::pty::openpty(None, None).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "escape::tiocsti_in_a_program",
            "--exact",
            "--include-ignored",
            "--test-threads=1",
        ])
        .stdin(std::process::Stdio::from(pty.slave))
        .output()
        .unwrap();
    let text = crate::text(&out);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "runs a program on this process's stdin for tiocsti_never_reaches_the_hosts_terminal"]
fn tiocsti_in_a_program() {
    assert!(nix::unistd::isatty(std::io::stdin()).unwrap());
    let out = isotest::Sandbox::default()
        .command("/bin/sh", ["-c", TIOCSTI])
        .stdin(isotest::Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[isolated]
#[ignore = "lists its fds for no_fd_of_the_supervisor_reaches_the_sandbox"]
fn lists_its_fds() {
    let mut targets = Vec::new();
    for entry in fs::read_dir("/proc/self/fd").unwrap() {
        let fd = entry.unwrap().file_name();
        if let Ok(t) = fs::read_link(Path::new("/proc/self/fd").join(&fd)) {
            targets.push(format!("{} {}", fd.to_string_lossy(), t.display()));
        }
    }
    println!("fds: {targets:?}");
    assert!(
        !targets.iter().any(|t| t.contains("isotest-fd-marker")),
        "{targets:?}"
    );
    assert!(!Path::new("/proc/self/fd/9").exists(), "{targets:?}");
}

#[test]
fn no_fd_of_the_supervisor_reaches_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let inherited = dir.path().join("isotest-fd-marker-inherited");
    fs::write(&inherited, "").unwrap();
    // The supervisor gets a non-close-on-exec fd 9 from its parent (the shell's redirection).
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(
            "exec \"$0\" escape::lists_its_fds --exact --include-ignored --nocapture \
             --test-threads=1 9<\"$1\"",
        )
        .arg(&exe)
        .arg(&inherited)
        .output()
        .unwrap();
    let text = crate::text(&out);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");

    // In this process: one close-on-exec fd and one inherited by every child, then a program.
    let cloexec = fs::File::open(&inherited).unwrap();
    let plain = fs::File::open(&inherited).unwrap();
    let flags = nix::fcntl::FdFlag::empty();
    nix::fcntl::fcntl(&plain, nix::fcntl::FcntlArg::F_SETFD(flags)).unwrap();
    let out = isotest::Sandbox::default()
        .command("/bin/ls", ["-l", "/proc/self/fd/"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains("isotest-fd-marker"), "{listing}");
    drop((cloexec, plain));
}
