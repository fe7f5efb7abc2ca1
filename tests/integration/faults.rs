//! Faults: a killed supervisor, stopped and daemonised processes, fork bombs, a full overlay,
//! bare and hostile root filesystems, many sandboxes at once, and many in a row.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use isotest::isolated;

use crate::{run_alone, test_command};

/// Host pids of processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn host_mounts() -> usize {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

/// Whether another open file description holds a lock on `path` (a non-blocking try).
fn locked(path: &Path) -> bool {
    let f = fs::File::open(path).unwrap();
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_) => false,
        Err((_, e)) => {
            assert_eq!(e, nix::errno::Errno::EWOULDBLOCK);
            true
        }
    }
}

#[isolated(bind = ["/tmp:/hosttmp:rw"])]
#[ignore = "holds a lock on a host file for a_killed_supervisor_releases_the_sandbox_lock"]
// The sleeper is killed with the sandbox, never waited for.
#[allow(clippy::zombie_processes)]
fn holds_a_host_lock() {
    let name = std::env::var("ISOTEST_LOCK_FILE").unwrap();
    let f = fs::File::open(Path::new("/hosttmp").join(name)).unwrap();
    let _lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let _sleeper = Command::new("/bin/sleep").arg("4250").spawn().unwrap();
    println!("locked");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_supervisor_releases_the_sandbox_lock() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let file = dir.path().join("lock");
    fs::write(&file, "").unwrap();
    let name = file
        .strip_prefix("/tmp")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mounts = host_mounts();
    let mut child = test_command("faults::holds_a_host_lock", &[("ISOTEST_LOCK_FILE", &name)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    crate::wait_for_line(&mut child, "locked");
    assert!(locked(&file), "the sandbox does not hold the lock");
    child.kill().unwrap(); // SIGKILL to the supervisor
    child.wait().unwrap();
    wait_until(
        "the lock outlived the supervisor by a second",
        Duration::from_secs(1),
        || !locked(&file),
    );
    wait_until("sandbox processes survived", Duration::from_secs(2), || {
        processes(&["/bin/sleep", "4250"]).is_empty()
    });
    assert_eq!(host_mounts(), mounts, "host mounts changed");
}

#[isolated(timeout = "1500ms")]
#[ignore = "stops itself for a_stopped_sandbox_still_times_out"]
// The stopped child is killed with the sandbox, never waited for.
#[allow(clippy::zombie_processes)]
fn stops_itself() {
    // A child that ignores SIGTERM and stops itself; PID 1 (this test) is stopped from the host
    // (a pid namespace's init ignores stop signals from inside).
    Command::new("/bin/sh")
        .args(["-c", "trap '' TERM; kill -STOP $$; sleep 4251"])
        .spawn()
        .unwrap();
    println!("stopping");
    std::thread::sleep(Duration::from_secs(60));
}

/// The host pid of the sandboxed test `name` (PID 1 of its own pid namespace).
fn sandboxed_test_pid(name: &str) -> Option<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(name)
                && status
                    .lines()
                    .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1"))
        })
}

#[test]
fn a_stopped_sandbox_still_times_out() {
    let started = Instant::now();
    let mut child = test_command("faults::stops_itself", &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::wait_for_line(&mut child, "stopping");
    let pid = sandboxed_test_pid("faults::stops_itself").expect("the sandboxed test's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGSTOP,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = crate::text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("timed out after 1500ms"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20), "{text}");
    assert!(processes(&["sleep", "4251"]).is_empty());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[isolated]
#[ignore = "leaves a daemon for a_setsid_daemon_is_named_and_killed"]
fn leaves_a_daemon() {
    let status = Command::new("/bin/sh")
        .args(["-c", "setsid /bin/sh -c 'sleep 4252 & exit 0' & wait"])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn a_setsid_daemon_is_named_and_killed() {
    let (passed, text) = run_alone("faults::leaves_a_daemon", &[]);
    assert!(!passed, "{text}");
    assert!(text.contains("sleep 4252"), "{text}");
    wait_until(
        "the daemon survived its sandbox",
        Duration::from_secs(2),
        || processes(&["sleep", "4252"]).is_empty(),
    );
}

#[isolated(pids_max = 64, allow_leaks = ["processes"])]
#[ignore = "runs a fork bomb for a_fork_bomb_is_contained"]
fn fork_bomb() {
    // Fork without bound, holding every child, until the kernel refuses.
    let mut children = Vec::new();
    let e = loop {
        match Command::new("/bin/sleep").arg("4253").spawn() {
            Ok(child) => children.push(child),
            Err(e) => break e,
        }
        assert!(children.len() < 1000, "no limit after 1000 processes");
    };
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{e}");
    // The limit counts the sandbox's processes: this test (PID 1) and its children.
    assert!(children.len() < 64, "{} processes", children.len());
    println!("contained at {} processes", children.len() + 1);
}

#[test]
fn a_fork_bomb_is_contained() {
    let child = test_command("faults::fork_bomb", &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let supervisor = child.id();
    let out = child.wait_with_output().unwrap();
    let text = crate::text(&out);
    assert!(
        out.status.success() && text.contains("contained at"),
        "{text}"
    );
    assert!(processes(&["/bin/sleep", "4253"]).is_empty());
    // The sandbox's cgroup is gone with it.
    for hierarchy in [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        if let Ok(entries) = fs::read_dir(hierarchy) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with(&format!("isotest-{supervisor}-")),
                    "{hierarchy}/{name} left behind"
                );
            }
        }
    }
}

#[isolated(tmpfs_size = "16m")]
fn a_full_overlay_is_enospc_inside() {
    let stats = nix::sys::statvfs::statvfs("/").unwrap();
    // The writable layer is the scratch tmpfs of 16 MiB, not a host disk.
    assert!(stats.blocks() * stats.fragment_size() <= 16 << 20);
    let chunk = vec![7u8; 1 << 20];
    let mut f = fs::File::create("/var/fill").unwrap();
    let mut written = 0;
    let e = loop {
        match std::io::Write::write_all(&mut f, &chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
        assert!(written <= 17 << 20, "wrote {written} bytes");
    };
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    drop(f);
    fs::remove_file("/var/fill").unwrap();
}

/// A root filesystem of a single file, `etc/os-release`.
fn bare_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/os-release"), "ID=bare\n").unwrap();
    root
}

fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[isolated]
#[ignore = "needs a bare root filesystem; a_bare_rootfs_works and a_hostile_rootfs_never_reaches_out run it"]
fn in_a_bare_rootfs() {
    assert_eq!(fs::read_to_string("/etc/os-release").unwrap(), "ID=bare\n");
    assert_eq!(std::process::id(), 1);
    assert!(Path::new("/proc/self/status").exists());
    assert!(Path::new("/sys/kernel").exists());
    fs::write("/dev/null", "x").unwrap();
    fs::write("/tmp/x", "x").unwrap();
    println!("bare rootfs ok");
}

#[test]
fn a_bare_rootfs_works() {
    let dir = tempfile::tempdir().unwrap();
    let root = bare_rootfs(dir.path());
    let before = tree(&root);
    let spec = format!("dir:{}", root.display());
    let (passed, text) = run_alone("faults::in_a_bare_rootfs", &[("ISOTEST_ROOTFS", &spec)]);
    assert!(passed && text.contains("1 passed"), "{text}");
    assert_eq!(
        tree(&root),
        before,
        "the mount points were made in the lower layer"
    );
}

#[test]
fn a_hostile_rootfs_never_reaches_out() {
    for (link, refused) in [
        ("proc", true),
        ("sys", true),
        ("dev", true),
        ("tmp", true),
        ("dev/null", false),
        ("etc/hostname", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = bare_rootfs(dir.path());
        let outside = dir.path().join("outside");
        let target = outside.join("target");
        fs::create_dir_all(&outside).unwrap();
        if let Some(parent) = Path::new(link).parent() {
            fs::create_dir_all(root.join(parent)).unwrap();
        }
        std::os::unix::fs::symlink(&target, root.join(link)).unwrap();
        let mounts = host_mounts();
        let spec = format!("dir:{}", root.display());
        let (passed, text) = run_alone("faults::in_a_bare_rootfs", &[("ISOTEST_ROOTFS", &spec)]);
        if refused {
            assert!(!passed, "/{link}: {text}");
            assert!(
                text.contains(&format!("/{link} is a symlink to {}", target.display())),
                "/{link}: {text}"
            );
        } else {
            assert!(passed, "/{link}: {text}");
        }
        assert!(!target.exists(), "/{link}: created {}", target.display());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "/{link}");
        assert_eq!(host_mounts(), mounts, "/{link}");
    }
}

#[isolated]
#[ignore = "writes its marker for sandboxes_in_parallel_never_see_each_other"]
fn writes_its_marker() {
    let me = std::env::var("ISOTEST_MARKER").unwrap();
    fs::write(format!("/etc/marker-{me}"), &me).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let markers: Vec<String> = fs::read_dir("/etc")
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            n.starts_with("marker-").then_some(n)
        })
        .collect();
    assert_eq!(markers, [format!("marker-{me}")]);
    println!("only marker-{me}");
}

#[test]
fn sandboxes_in_parallel_never_see_each_other() {
    let children: Vec<(usize, Child)> = (0..32)
        .map(|i| {
            let child = test_command(
                "faults::writes_its_marker",
                &[("ISOTEST_MARKER", &i.to_string())],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            (i, child)
        })
        .collect();
    for (i, child) in children {
        let out = child.wait_with_output().unwrap();
        let text = crate::text(&out);
        assert!(
            out.status.success() && text.contains(&format!("only marker-{i}\n")),
            "{i}: {text}"
        );
    }
}

/// Files and bytes under `dir`, without following symlinks.
fn usage(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            files += 1;
            bytes += meta.len();
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (files, bytes)
}

/// What the soak compares before and after.
fn soak_state() -> (usize, usize, Vec<String>, (u64, u64)) {
    let fds = fs::read_dir("/proc/self/fd").unwrap().count();
    let mut tmp: Vec<String> = fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        // Other tests' temporary directories come and go meanwhile.
        .filter(|n| !n.starts_with(".tmp"))
        .collect();
    tmp.sort();
    let cache = std::env::var_os("ISOTEST_CACHE").map_or((0, 0), |c| usage(Path::new(&c)));
    (fds, host_mounts(), tmp, cache)
}

/// `ISOTEST_SOAK_RUNS` sandboxed programs in a row (default 100): the supervisor's fds, the
/// host's mounts, `/tmp` and the cache are the same after as before.
#[test]
#[ignore = "the soak body; many_sandboxes_in_a_row_leave_nothing runs it alone"]
fn soak() {
    let runs: usize = std::env::var("ISOTEST_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let sandbox = isotest::Sandbox::default();
    // One run first, so that what is made once (the rootfs memo, the exe fd) is made.
    assert!(sandbox
        .command("/bin/true", Vec::<String>::new())
        .status()
        .unwrap()
        .success());
    let before = soak_state();
    for i in 0..runs {
        let out = sandbox
            .command("/bin/sh", ["-c", "echo $$; touch /etc/soak"])
            .output()
            .unwrap();
        assert!(out.status.success(), "run {i}: {out:?}");
        assert_eq!(out.stdout, b"1\n", "run {i}");
    }
    let after = soak_state();
    assert_eq!(before, after, "after {runs} runs");
    println!("soak: {runs} runs");
}

#[test]
fn many_sandboxes_in_a_row_leave_nothing() {
    let (passed, text) = run_alone("faults::soak", &[]);
    assert!(passed, "{text}");
}
