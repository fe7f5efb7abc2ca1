//! What a test observes inside its sandbox, and how a sandboxed test behaves as a test.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use isotest::isolated;

use crate::{run_test, test_command, text};

fn sh(script: &str) -> String {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "`{script}` failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mount_points() -> Vec<(String, String, String)> {
    // (mount point, fs type, per-mount options)
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-").unwrap();
            (f[4].to_string(), f[sep + 1].to_string(), f[5].to_string())
        })
        .collect()
}

// ---- identity and privileges ----

#[isolated]
fn runs_as_pid_1_and_root_in_a_user_namespace() {
    assert_eq!(std::process::id(), 1);
    assert_eq!(nix::unistd::getppid().as_raw(), 0);
    assert_eq!(nix::unistd::getuid().as_raw(), 0);
    assert_eq!(nix::unistd::getgid().as_raw(), 0);
    // A user namespace of its own, mapped as the supervisor's user allows.
    let uid_map = fs::read_to_string("/proc/self/uid_map").unwrap();
    let lines: Vec<Vec<&str>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    if rootless() {
        // The caller is root inside; a subordinate range (if /etc/subuid grants one) above it.
        assert_eq!(lines[0], ["0", "0", "1"], "uid_map: {uid_map}");
        assert!(lines.len() <= 2, "uid_map: {uid_map}");
    } else {
        // Supervisor ran as root: the identity over the full range.
        assert_eq!(lines, [["0", "0", "4294967295"]], "uid_map: {uid_map}");
    }
    let gid_map = fs::read_to_string("/proc/self/gid_map").unwrap();
    assert_eq!(gid_map.lines().count(), uid_map.lines().count());
}

#[test]
fn the_sandbox_has_a_user_namespace_of_its_own() {
    let host = fs::read_link("/proc/self/ns/user").unwrap();
    let out = run_test("core::prints_its_namespaces", &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for ns in ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"] {
        let host_ns = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert!(
            t.contains(&format!("ns {ns} {ns}:[")),
            "no {ns} line in {t}"
        );
        assert!(
            !t.contains(&format!("ns {ns} {}", host_ns.display())),
            "{ns} namespace is the host's: {t}"
        );
    }
    assert!(!t.contains(&format!("ns user {}", host.display())));
}

#[isolated]
#[ignore = "prints its namespaces for the_sandbox_has_a_user_namespace_of_its_own"]
fn prints_its_namespaces() {
    for ns in ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"] {
        println!(
            "ns {ns} {}",
            fs::read_link(format!("/proc/self/ns/{ns}"))
                .unwrap()
                .display()
        );
    }
}

#[isolated]
fn files_keep_their_owners() {
    let m = fs::metadata("/etc/shadow").unwrap();
    if rootless() {
        // A rootless cache entry belongs to the user who built it: root inside.
        assert_eq!((m.uid(), m.gid()), (0, 0));
    } else {
        // /etc/shadow belongs to the shadow group of the rootfs, not to a squashed id.
        assert_eq!((m.uid(), m.gid()), (0, shadow_gid()));
    }
    // Tools that switch users work (rootless: with a subordinate range in /etc/subuid).
    sh("useradd --create-home alice");
    assert_eq!(sh("su alice -c 'id -un'").trim(), "alice");
    let uid: u32 = sh("id -u alice").trim().parse().unwrap();
    fs::write("/tmp/owned", "x").unwrap();
    sh("chown alice /tmp/owned");
    assert_eq!(fs::metadata("/tmp/owned").unwrap().uid(), uid);
    assert_eq!(fs::metadata("/home/alice").unwrap().uid(), uid);
}

/// The sandbox runs for an ordinary user: its user namespace is not the identity.
fn rootless() -> bool {
    isotest::fixtures::sandbox().rootless
}

fn shadow_gid() -> u32 {
    fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("shadow:x:"))
        .and_then(|rest| rest.split(':').next().map(|g| g.parse::<u32>().unwrap()))
        .expect("a shadow group")
}

#[isolated]
fn dpkg_installs_a_real_package() {
    let pkg = Path::new("/tmp/pkg");
    fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    fs::create_dir_all(pkg.join("usr/share/isotest-demo")).unwrap();
    fs::write(
        pkg.join("DEBIAN/control"),
        "Package: isotest-demo\nVersion: 1.0\nArchitecture: all\nMaintainer: isotest <isotest@localhost>\nDescription: demo\n",
    )
    .unwrap();
    fs::write(pkg.join("usr/share/isotest-demo/hello"), "hello\n").unwrap();
    sh("dpkg-deb --root-owner-group --build /tmp/pkg /tmp/isotest-demo.deb >/dev/null");
    sh("dpkg -i /tmp/isotest-demo.deb >/dev/null");
    assert!(sh("dpkg -s isotest-demo").contains("Status: install ok installed"));
    assert_eq!(
        fs::read_to_string("/usr/share/isotest-demo/hello").unwrap(),
        "hello\n"
    );
    sh("dpkg -r isotest-demo >/dev/null");
    assert!(!Path::new("/usr/share/isotest-demo/hello").exists());
    assert!(sh("apt-get --version").starts_with("apt "));
    assert!(sh("apt-cache policy dpkg").contains("Installed:"));
}

#[isolated]
fn root_inside_has_no_power_over_the_host() {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    // A block device for the host's disk cannot be made.
    let e = mknod(
        "/tmp/disk",
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(8, 0),
    )
    .unwrap_err();
    assert_eq!(e, nix::errno::Errno::EPERM);
    // Kernel knobs are out of reach.
    for knob in [
        "/proc/sysrq-trigger",
        "/proc/sys/kernel/panic",
        "/proc/sys/vm/drop_caches",
    ] {
        let r = fs::OpenOptions::new().write(true).open(knob);
        assert!(r.is_err(), "{knob} is writable");
    }
    assert!(fs::write("/sys/kernel/mm/transparent_hugepage/enabled", "never").is_err());
}

#[test]
fn privileged_needs_root_and_opts_out_of_the_user_namespace() {
    let out = run_test("core::privileged_opts_out_of_the_user_namespace", &[]);
    let t = text(&out);
    if nix::unistd::getuid().is_root() {
        assert!(out.status.success(), "{t}");
    } else {
        assert!(!out.status.success(), "{t}");
        assert!(t.contains("privileged = true needs root"), "{t}");
    }
}

#[isolated(privileged = true)]
#[ignore = "needs root; privileged_needs_root_and_opts_out_of_the_user_namespace runs it"]
fn privileged_opts_out_of_the_user_namespace() {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    // Real host root: device nodes can be made (on the sandbox's tmpfs).
    mknod(
        "/tmp/null2",
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    assert_eq!(std::process::id(), 1);
}

// ---- hostname ----

#[isolated(hostname = "web1")]
fn hostname_is_the_configured_one() {
    assert_eq!(nix::unistd::gethostname().unwrap(), "web1");
    assert_eq!(nix::sys::utsname::uname().unwrap().nodename(), "web1");
}

#[isolated]
fn hostname_defaults_to_the_function_name() {
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        "hostname-defaults-to-the-function-name"
    );
}

#[isolated(hostname = "changed-inside")]
#[ignore = "changes its hostname for the_host_hostname_is_unchanged"]
fn sets_another_hostname() {
    nix::unistd::sethostname("changed-again").unwrap();
    assert_eq!(nix::unistd::gethostname().unwrap(), "changed-again");
}

#[test]
fn the_host_hostname_is_unchanged() {
    let before = nix::unistd::gethostname().unwrap();
    let out = run_test("core::sets_another_hostname", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(nix::unistd::gethostname().unwrap(), before);
}

// ---- the root filesystem ----

#[isolated]
fn root_is_an_overlay_and_the_host_is_invisible() {
    let mounts = mount_points();
    let (_, fstype, _) = mounts.iter().find(|(p, _, _)| p == "/").unwrap();
    assert_eq!(fstype, "overlay");
    // Nothing of the host: no old root, no checkout, no test binary.
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR")).exists());
    let exe = fs::read_link("/proc/self/exe").unwrap();
    assert!(!exe.exists(), "{} visible inside", exe.display());
    for host_only in ["/tmp/upper", "/tmp/root", "/work", "/root/.cargo"] {
        assert!(!Path::new(host_only).exists(), "{host_only} visible inside");
    }
    // Only the sandbox's own mounts.
    let allowed = [
        "/",
        "/proc",
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys",
        "/sys/firmware",
        "/dev",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/pts",
        "/dev/shm",
        "/tmp",
    ];
    for (point, _, _) in &mounts {
        assert!(
            allowed.contains(&point.as_str()),
            "unexpected mount {point}"
        );
    }
    assert!(mounts.len() >= 13, "{mounts:?}");
}

#[isolated]
#[ignore = "prints /etc/os-release for os_release_is_the_rootfs_one"]
fn prints_os_release() {
    print!("{}", fs::read_to_string("/etc/os-release").unwrap());
}

#[test]
fn os_release_is_the_rootfs_one() {
    let want = fs::read_to_string(crate::rootfs_dir().join("etc/os-release")).unwrap();
    let out = run_test("core::prints_os_release", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&want));
}

// ---- /proc, /sys, /dev, /tmp ----

#[isolated]
fn proc_shows_only_the_sandbox() {
    let mut child = Command::new("/bin/sleep").arg("5").spawn().unwrap();
    let pids: BTreeSet<u32> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(pids, BTreeSet::from([1, child.id()]));
    child.kill().unwrap();
    child.wait().unwrap();
    let mounts = mount_points();
    assert!(mounts.iter().any(|(p, t, _)| p == "/proc" && t == "proc"));
}

#[isolated]
fn sys_is_read_only_sysfs() {
    let mounts = mount_points();
    let (_, fstype, opts) = mounts.iter().find(|(p, _, _)| p == "/sys").unwrap();
    assert_eq!(fstype, "sysfs");
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    let e = fs::write("/sys/kernel/uevent_helper", "/x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[isolated]
fn dev_has_working_devices() {
    let mounts = mount_points();
    assert!(mounts.iter().any(|(p, t, _)| p == "/dev" && t == "tmpfs"));
    assert!(mounts
        .iter()
        .any(|(p, t, _)| p == "/dev/pts" && t == "devpts"));
    assert!(mounts
        .iter()
        .any(|(p, t, _)| p == "/dev/shm" && t == "tmpfs"));
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let m = fs::metadata(format!("/dev/{name}")).unwrap();
        assert!(m.file_type().is_char_device(), "/dev/{name}");
        let rdev = m.rdev();
        assert_eq!(
            (libc::major(rdev), libc::minor(rdev)),
            (major, minor),
            "/dev/{name}"
        );
    }
    fs::write("/dev/null", "gone").unwrap();
    let mut zeros = [1u8; 16];
    fs::File::open("/dev/zero")
        .unwrap()
        .read_exact(&mut zeros)
        .unwrap();
    assert_eq!(zeros, [0; 16]);
    let e = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
        .write_all(b"x");
    assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    let mut random = [0u8; 32];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    assert_ne!(random, [0; 32]);
    // A pseudo-terminal can be opened.
    let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR).unwrap();
    let name = nix::pty::ptsname_r(&master).unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    assert_eq!(fs::read_link("/dev/ptmx").unwrap(), Path::new("pts/ptmx"));
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        assert_eq!(
            fs::read_link(format!("/dev/{link}")).unwrap(),
            Path::new(target)
        );
    }
    fs::write("/dev/shm/x", "shared").unwrap();
}

#[isolated]
fn tmp_is_a_fresh_tmpfs() {
    let mounts = mount_points();
    assert!(mounts.iter().any(|(p, t, _)| p == "/tmp" && t == "tmpfs"));
    assert_eq!(fs::read_dir("/tmp").unwrap().count(), 0);
    let m = fs::metadata("/tmp").unwrap();
    assert_eq!(m.mode() & 0o7777, 0o1777);
}

// ---- network ----

#[isolated]
fn only_loopback_and_it_is_up() {
    let ifaces: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(ifaces, ["lo"]);
    let flags = fs::read_to_string("/sys/class/net/lo/flags").unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & libc::IFF_UP as u32, libc::IFF_UP as u32);
    let listener = std::net::TcpListener::bind("127.0.0.1:8080").unwrap();
    let mut client = std::net::TcpStream::connect("127.0.0.1:8080").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[isolated]
#[ignore = "holds 127.0.0.1:8080 for two_sandboxes_bind_the_same_port"]
fn holds_port_8080() {
    let _listener = std::net::TcpListener::bind("127.0.0.1:8080").unwrap();
    println!("bound");
    std::thread::sleep(Duration::from_millis(700));
}

#[test]
fn two_sandboxes_bind_the_same_port() {
    // The host holds the port too: each sandbox has a loopback of its own.
    let _host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = test_command("core::holds_port_8080", &[]).spawn_output();
    let b = test_command("core::holds_port_8080", &[]).spawn_output();
    let (a, b) = (a.join(), b.join());
    assert!(a.status.success(), "{}", text(&a));
    assert!(b.status.success(), "{}", text(&b));
}

trait SpawnOutput {
    fn spawn_output(self) -> Pending;
}

struct Pending(std::process::Child);

impl Pending {
    fn join(self) -> std::process::Output {
        self.0.wait_with_output().unwrap()
    }
}

impl SpawnOutput for Command {
    fn spawn_output(mut self) -> Pending {
        use std::process::Stdio;
        Pending(
            self.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }
}

// ---- writes are thrown away ----

#[isolated]
#[ignore = "writes into the root for writes_vanish_with_the_test"]
fn writes_everywhere() {
    fs::write("/etc/isotest-marker", "x").unwrap();
    fs::write("/usr/bin/isotest-marker", "x").unwrap();
    fs::remove_file("/etc/debian_version").unwrap();
    fs::create_dir_all("/var/lib/isotest/deep").unwrap();
    fs::write("/var/lib/isotest/deep/file", vec![7u8; 1 << 20]).unwrap();
    // Moving a directory of the lower layer works (mv copies where rename(2) says EXDEV).
    assert!(Command::new("/bin/mv")
        .args(["/usr/share/doc", "/usr/share/doc-moved"])
        .status()
        .unwrap()
        .success());
}

#[isolated]
#[ignore = "checks the writes are gone for writes_vanish_with_the_test"]
fn sees_no_earlier_writes() {
    assert!(!Path::new("/etc/isotest-marker").exists());
    assert!(!Path::new("/usr/bin/isotest-marker").exists());
    assert!(Path::new("/etc/debian_version").exists());
    assert!(!Path::new("/var/lib/isotest").exists());
    assert!(Path::new("/usr/share/doc").exists());
}

fn tree_digest(root: &Path) -> Vec<(String, u64, u32, u32, u32, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            out.push((
                e.path().to_string_lossy().into_owned(),
                m.len(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.ctime(),
            ));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn writes_vanish_with_the_test() {
    let rootfs = crate::rootfs_dir();
    let before = tree_digest(&rootfs);
    let host_tmp_before: BTreeSet<_> = fs::read_dir("/tmp")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = run_test("core::writes_everywhere", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_test("core::sees_no_earlier_writes", &[]);
    assert!(out.status.success(), "{}", text(&out));
    // The rootfs is untouched, file by file (sizes, modes, owners, times).
    assert!(tree_digest(&rootfs) == before, "the rootfs changed");
    // Nothing landed in the host's /tmp (where the sandbox keeps its scratch tmpfs).
    let host_tmp_after: BTreeSet<_> = fs::read_dir("/tmp")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for name in ["upper", "work", "root"] {
        assert!(
            !host_tmp_after.contains(std::ffi::OsStr::new(name))
                || host_tmp_before.contains(std::ffi::OsStr::new(name)),
            "/tmp/{name} left on the host"
        );
    }
}

// ---- behaving as a test ----

#[isolated]
#[ignore = "prints a lot for large_output_is_relayed_in_full"]
fn prints_a_lot() {
    let line = "x".repeat(1023);
    let mut out = std::io::stdout().lock();
    // Off the line of libtest's `test NAME ... `.
    writeln!(out).unwrap();
    for i in 0..4096 {
        writeln!(out, "{i:08} {line}").unwrap();
    }
    drop(out);
    for i in 0..1024 {
        eprintln!("err {i:08} {line}");
    }
    println!("the end");
}

#[test]
fn large_output_is_relayed_in_full() {
    let out = run_test("core::prints_a_lot", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.len() == 1032).collect();
    assert_eq!(lines.len(), 4096);
    // In order.
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("{i:08} ")), "line {i} out of order");
    }
    assert!(stdout.contains("the end"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("err ")).count(),
        1024
    );
}

#[test]
fn output_is_captured_like_any_test_output() {
    // Without --nocapture, a passing sandboxed test's output stays hidden and libtest's own
    // header from inside the sandbox never shows.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["core::prints_os_release", "--exact", "--include-ignored"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("PRETTY_NAME"), "{t}");
    assert_eq!(t.matches("running 1 test").count(), 1, "{t}");
}

#[isolated]
#[ignore = "fails on purpose for a_panic_inside_fails_with_its_message_and_location"]
fn fails_inside() {
    println!("output before the failure");
    let answer = 41;
    assert_eq!(answer, 42, "the answer is wrong");
}

#[test]
fn a_panic_inside_fails_with_its_message_and_location() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["core::fails_inside", "--exact", "--include-ignored"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("the answer is wrong"), "{t}");
    assert!(t.contains("left: 41"), "{t}");
    assert!(t.contains("tests/integration/core.rs:"), "no location: {t}");
    assert!(t.contains("output before the failure"), "{t}");
    assert!(t.contains("test core::fails_inside ... FAILED"), "{t}");
}

#[isolated]
#[should_panic(expected = "inner message 42")]
fn should_panic_matches_the_inner_message() {
    panic!("inner message {}", 42);
}

#[isolated]
fn result_ok_passes() -> Result<(), std::io::Error> {
    fs::write("/etc/result-ok", "x")?;
    Ok(())
}

#[isolated]
#[ignore = "returns Err for a_result_err_fails_the_test"]
fn returns_err() -> Result<(), String> {
    Err("the inner error".to_string())
}

#[test]
fn a_result_err_fails_the_test() {
    let out = run_test("core::returns_err", &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("the inner error"), "{t}");
}

#[isolated]
#[ignore = "is ignored; ignored_tests_run_in_the_sandbox_when_asked runs it"]
fn ignored_but_run_on_request() {
    assert_eq!(std::process::id(), 1);
    println!("ignored test ran inside");
}

#[test]
fn ignored_tests_run_in_the_sandbox_when_asked() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "core::ignored_but_run_on_request",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("ignored test ran inside"), "{t}");
    // And without --ignored it does not run at all.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["core::ignored_but_run_on_request", "--exact", "--nocapture"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("ignored test ran inside"), "{t}");
    assert!(t.contains("1 ignored"), "{t}");
}

#[rstest::rstest]
#[case("a")]
#[case("b")]
#[isolated]
fn rstest_cases_each_get_a_sandbox(#[case] name: &str) {
    assert_eq!(std::process::id(), 1);
    // A write from the other case never shows up here.
    assert!(!Path::new("/etc/case-marker").exists());
    fs::write("/etc/case-marker", name).unwrap();
}

// ---- timeout and supervisor death ----

#[isolated(timeout = "700ms")]
#[ignore = "sleeps past its timeout for the_timeout_kills_the_sandbox"]
fn sleeps_too_long() {
    println!("before the sleep");
    let mut sleeper = Command::new("/bin/sleep").arg("1000").spawn().unwrap();
    std::thread::sleep(Duration::from_secs(30));
    sleeper.wait().unwrap();
}

#[test]
fn the_timeout_kills_the_sandbox() {
    let start = Instant::now();
    let out = run_test("core::sleeps_too_long", &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("timed out after 700ms"), "{t}");
    assert!(t.contains("before the sleep"), "{t}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(sleepers("1000").is_empty(), "sleep survived the timeout");
}

#[test]
fn isotest_timeout_env_sets_the_default() {
    let out = run_test(
        "core::sleeps_past_the_env_timeout",
        &[("ISOTEST_TIMEOUT", "300ms")],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("timed out after 300ms"), "{t}");
}

#[isolated]
#[ignore = "sleeps; isotest_timeout_env_sets_the_default runs it with ISOTEST_TIMEOUT"]
fn sleeps_past_the_env_timeout() {
    std::thread::sleep(Duration::from_secs(20));
}

/// Host pids of processes running `sleep ARG`.
fn sleepers(arg: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c == format!("/bin/sleep\0{arg}\0").as_bytes())
                .unwrap_or(false)
        })
        .collect()
}

#[isolated]
#[ignore = "waits to be killed for killing_the_supervisor_leaves_nothing"]
fn waits_for_the_kill() {
    let mut sleeper = Command::new("/bin/sleep").arg("4242").spawn().unwrap();
    println!("sandbox ready");
    std::thread::sleep(Duration::from_secs(60));
    sleeper.wait().unwrap();
}

#[test]
fn killing_the_supervisor_leaves_nothing() {
    let mounts_before = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let mut child = test_command("core::waits_for_the_kill", &[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::wait_for_line(&mut child, "sandbox ready");
    assert_eq!(sleepers("4242").len(), 1);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sleepers("4242").is_empty() {
        assert!(
            Instant::now() < deadline,
            "sandbox processes survived the supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mounts_after = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(mounts_before, mounts_after);
}

// ---- file descriptors ----

#[isolated]
fn only_stdio_and_the_report_channel_are_open() {
    // (fd, target, close-on-exec)
    let fds: Vec<(i32, String, bool)> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let fd: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
            let cloexec = u32::from_str_radix(flags, 8).ok()? & libc::O_CLOEXEC as u32 != 0;
            Some((fd, target.to_string_lossy().into_owned(), cloexec))
        })
        .collect();
    // Nothing of the supervisor's: stdio, the report channel, and what the sandboxed harness
    // holds itself (the overlay's layers for the teardown checks, read_dir's own fd).
    let sockets = fds
        .iter()
        .filter(|(_, t, _)| t.starts_with("socket:["))
        .count();
    assert_eq!(sockets, 1, "{fds:?}");
    for (fd, target, cloexec) in &fds {
        assert!(
            *fd <= 2 || *cloexec,
            "fd {fd} ({target}) would reach the test's children: {fds:?}"
        );
        assert!(!target.starts_with("pipe:") || *fd <= 2, "{fds:?}");
    }
    // What a program the test starts gets: stdio only (and the fd `ls` opens to list).
    let listed = sh("ls /proc/self/fd");
    let inherited: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(inherited, ["0", "1", "2", "3"], "{listed}");
    // The marker that made this a sandboxed test is gone from what its children inherit.
    assert!(std::env::var_os("__ISOTEST_SANDBOX").is_none());
    // stdin is /dev/null, not the host's terminal.
    assert_eq!(
        fs::read_link("/proc/self/fd/0").unwrap(),
        Path::new("/dev/null")
    );
}

#[isolated]
fn the_masks_over_kernel_knobs_are_locked() {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    // Root inside can mount new things...
    mount(
        Some("tmpfs"),
        "/mnt",
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    umount2("/mnt", MntFlags::empty()).unwrap();
    // ...but not undo what keeps it from the host's kernel knobs.
    assert!(
        umount2("/proc/sys", MntFlags::MNT_DETACH).is_err(),
        "/proc/sys unmasked"
    );
    let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    assert!(
        mount(
            None::<&str>,
            "/proc/sys",
            None::<&str>,
            remount,
            None::<&str>
        )
        .is_err(),
        "/proc/sys remounted read-write"
    );
    assert!(
        mount(
            None::<&str>,
            "/sys",
            None::<&str>,
            MsFlags::MS_REMOUNT,
            None::<&str>
        )
        .is_err(),
        "/sys remounted read-write"
    );
    assert!(
        umount2("/sys", MntFlags::MNT_DETACH).is_err(),
        "/sys unmounted"
    );
    // A fresh procfs or sysfs would reveal what the masks hide.
    fs::create_dir_all("/tmp/p").unwrap();
    assert!(mount(
        Some("proc"),
        "/tmp/p",
        Some("proc"),
        MsFlags::empty(),
        None::<&str>
    )
    .is_err());
    assert!(mount(
        Some("sysfs"),
        "/tmp/p",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>
    )
    .is_err());
    for knob in ["/proc/sys/vm/drop_caches", "/proc/sys/kernel/panic"] {
        assert!(
            fs::OpenOptions::new().write(true).open(knob).is_err(),
            "{knob}"
        );
    }
    // Still root, still PID 1, still master of its own hostname and network.
    nix::unistd::sethostname("renamed").unwrap();
    std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    assert_eq!(nix::unistd::getuid().as_raw(), 0);
    assert_eq!(std::process::id(), 1);
}

// ---- bad configuration ----

#[isolated(rootfs = "dir:/usr/share")]
#[ignore = "runs on a tree owned by root for a_tree_owned_by_another_user_is_refused_rootless"]
fn on_a_root_owned_tree() {
    assert!(Path::new("/doc").is_dir());
}

#[test]
fn a_tree_owned_by_another_user_is_refused_rootless() {
    let out = run_test("core::on_a_root_owned_tree", &[]);
    let t = text(&out);
    if nix::unistd::getuid().is_root() {
        // Root may use any tree.
        assert!(out.status.success(), "{t}");
    } else {
        assert!(!out.status.success(), "{t}");
        assert!(t.contains("/usr/share belongs to uid 0, not to you"), "{t}");
        assert!(t.contains("isotest rootfs build"), "{t}");
    }
}

#[isolated(rootfs = "/does/not/exist")]
#[ignore = "has a missing rootfs for a_missing_rootfs_names_the_value"]
fn with_missing_rootfs() {}

#[test]
fn a_missing_rootfs_names_the_value() {
    let out = run_test("core::with_missing_rootfs", &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("/does/not/exist"), "{t}");
    assert!(t.contains("ISOTEST_ROOTFS"), "{t}");
}

#[isolated]
#[ignore = "prints its TERM for term_reaches_the_test_body"]
fn prints_term() {
    println!("TERM={:?}", std::env::var("TERM").ok());
}

#[test]
fn term_reaches_the_test_body() {
    let out = run_test("core::prints_term", &[("TERM", "vt220")]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("TERM=Some(\"vt220\")"), "{t}");
}
