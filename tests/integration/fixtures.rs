//! The fixtures of `isotest::fixtures`, through rstest: resolved inside the sandbox.

use std::path::PathBuf;

use isotest::fixtures::*;
use isotest::isolated;
use rstest::rstest;

#[rstest]
#[isolated(hostname = "web1")]
fn hostname_is_the_sandboxs(hostname: Hostname) {
    assert_eq!(hostname, "web1");
    let uname = std::process::Command::new("uname")
        .arg("-n")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(uname.stdout).unwrap().trim(),
        hostname.as_str()
    );
}

#[rstest]
#[isolated]
fn mounts_show_the_sandbox(mounts: Mounts) {
    let proc = mounts.get("/proc").unwrap();
    assert_eq!(proc.fs_type, "proc");
    assert_eq!(mounts.get("/").unwrap().fs_type, "overlay");
    assert!(mounts.get("/sys").unwrap().read_only());
    assert_eq!(mounts.get("/tmp").unwrap().fs_type, "tmpfs");
    assert!(mounts
        .iter()
        .all(|m| !m.mount_point.starts_with("/tmp/root")));
}

#[rstest]
#[isolated]
fn sandbox_knows_its_test_and_root(sandbox: SandboxInfo) {
    assert_eq!(sandbox.test, "fixtures::sandbox_knows_its_test_and_root");
    assert_eq!(sandbox.rootfs, isotest::rootfs::spec_or_default(None));
    assert_eq!(sandbox.os_release.id, "debian");
    assert!(!sandbox.os_release.pretty_name.is_empty());
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_eq!(
        ns.to_string_lossy(),
        format!("pid:[{}]", sandbox.pid_namespace)
    );
    // Rootless unless the uid map is the identity over the full range (a root host).
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    let identity = uid_map.split_whitespace().eq(["0", "0", "4294967295"]);
    assert_eq!(sandbox.rootless, !identity);
}

#[rstest]
#[isolated]
fn changes_follow_the_test(changes: Changes) {
    assert_eq!(changes.list(), []);
    std::fs::write("/etc/myapp.conf", "x").unwrap();
    std::fs::remove_file("/etc/motd").unwrap();
    std::fs::write("/etc/hostname", "changed\n").unwrap();
    std::fs::create_dir_all("/opt/myapp/bin").unwrap();
    assert_eq!(
        changes.created(),
        [
            PathBuf::from("/etc/myapp.conf"),
            "/opt/myapp".into(),
            "/opt/myapp/bin".into()
        ]
    );
    assert_eq!(changes.modified(), [PathBuf::from("/etc/hostname")]);
    assert_eq!(changes.deleted(), [PathBuf::from("/etc/motd")]);
    assert_eq!(changes.list()[0].to_string(), "modified /etc/hostname");
}

#[rstest]
#[isolated]
fn fixtures_by_path(#[from(isotest::fixtures::hostname)] name: Hostname) {
    assert_eq!(name, "fixtures-by-path");
}

/// The README's example, as written there (with the installer inlined).
#[rstest]
#[isolated(hostname = "web1")]
fn the_readme_example(hostname: Hostname, mounts: Mounts, sandbox: SandboxInfo, changes: Changes) {
    assert_eq!(hostname, "web1");
    assert!(mounts.get("/proc").unwrap().fs_type == "proc");
    std::fs::write("/etc/myapp.conf", "listen = 8080\n").unwrap();
    assert!(changes.created().contains(&"/etc/myapp.conf".into()));
    assert!(!sandbox.test.is_empty());
}
