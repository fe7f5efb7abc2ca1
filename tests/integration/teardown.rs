//! Teardown checks: each one fails a test that leaks on purpose with a message naming the
//! leak, and lets a clean test pass.
// Leaving processes behind is what these tests are about.
#![allow(clippy::zombie_processes)]

use isotest::isolated;

// Processes.

#[isolated]
#[ignore = "leaks on purpose; run by teardown::leaked_process_fails_the_test"]
fn leaks_a_process() {
    let child = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    println!("started pid {}", child.id());
}

#[test]
fn leaked_process_fails_the_test() {
    let (passed, out) = crate::run_alone("teardown::leaks_a_process", &[]);
    assert!(!passed, "{out}");
    let pid = out
        .lines()
        .find_map(|l| l.strip_prefix("started pid "))
        .unwrap_or_else(|| panic!("no pid in:\n{out}"));
    assert!(
        out.contains(&format!("leaked process {pid} (sleep 1000)")),
        "{out}"
    );
    assert!(out.contains("allow_leaks = [\"processes\"]"), "{out}");
}

#[isolated]
#[should_panic(expected = "(sleep 1000)\n  hint: wait for the processes the test starts")]
fn leaked_process_message_is_the_panic() {
    std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
}

#[isolated]
#[should_panic(expected = "boom\n\nisotest: the test left things behind:\n  leaked process ")]
fn findings_follow_a_failing_body() {
    std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    panic!("boom");
}

#[isolated]
fn waited_process_passes() {
    let status = std::process::Command::new("sleep")
        .arg("0")
        .status()
        .unwrap();
    assert!(status.success());
    // An exited child nobody waited for is a zombie, not a leak.
    let _ = std::process::Command::new("true").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
}

#[isolated(allow_leaks = ["processes"])]
fn allowed_process_leak_passes() {
    std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
}

// Mounts.

fn mount_tmpfs(at: &str) {
    std::fs::create_dir_all(at).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "leaky", at])
        .status()
        .unwrap();
    assert!(status.success());
}

#[isolated]
#[should_panic(expected = "leaked mount /mnt/leak (tmpfs from leaky)")]
fn leaked_mount_fails_the_test() {
    mount_tmpfs("/mnt/leak");
}

#[isolated]
fn unmounted_mount_passes() {
    mount_tmpfs("/mnt/clean");
    let status = std::process::Command::new("umount")
        .arg("/mnt/clean")
        .status()
        .unwrap();
    assert!(status.success());
}

#[isolated(allow_leaks = ["mounts"])]
fn allowed_mount_leak_passes() {
    mount_tmpfs("/mnt/leak");
}

// Writes.

#[isolated(writes = ["/etc/myapp"])]
#[should_panic(expected = "deleted /etc/motd (outside writes = [\"/etc/myapp\"])\n  \
                created /etc/other.conf (outside writes = [\"/etc/myapp\"])\n  \
                modified /etc/passwd (outside writes = [\"/etc/myapp\"])")]
fn writes_outside_the_declared_paths_fail() {
    std::fs::create_dir_all("/etc/myapp").unwrap();
    std::fs::write("/etc/myapp/app.conf", "ok").unwrap();
    std::fs::write("/etc/other.conf", "not declared").unwrap();
    std::fs::remove_file("/etc/motd").unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    std::fs::write("/etc/passwd", passwd + "myapp:x:999:999::/:/bin/false\n").unwrap();
}

#[isolated(writes = ["/etc/apt"])]
#[should_panic(expected = "deleted /var/lib/dpkg/status (outside")]
fn removed_and_remade_directory_reports_what_went() {
    // An opaque directory in the upper layer: everything the lower one had below it is gone.
    std::fs::remove_dir_all("/var/lib/dpkg").unwrap();
    std::fs::create_dir("/var/lib/dpkg").unwrap();
}

#[isolated(writes = ["/etc/myapp", "/var/lib/myapp/state"])]
fn writes_inside_the_declared_paths_pass() {
    std::fs::create_dir_all("/etc/myapp").unwrap();
    std::fs::write("/etc/myapp/app.conf", "ok").unwrap();
    // Directories made on the way to a declared path are part of writing it.
    std::fs::create_dir_all("/var/lib/myapp/state").unwrap();
    std::fs::write("/var/lib/myapp/state/db", "1").unwrap();
    // /tmp is a tmpfs of its own, not the root filesystem.
    std::fs::write("/tmp/scratch", "x").unwrap();
}

#[isolated]
fn without_writes_anything_goes() {
    std::fs::write("/etc/anything", "x").unwrap();
    std::fs::remove_file("/etc/motd").unwrap();
}
