//! Bind mounts: host paths in the sandbox, read-only by default.

use isotest::fixtures::*;
use isotest::isolated;
use rstest::rstest;

#[rstest]
#[isolated(bind = ["fixtures/bind-data:/data", "fixtures/bind-data/greeting.txt:/etc/greeting:ro"])]
fn relative_sources_are_read_only_by_default(mounts: Mounts) {
    assert_eq!(
        std::fs::read_to_string("/data/greeting.txt").unwrap(),
        "hello from the host\n"
    );
    assert_eq!(
        std::fs::read_to_string("/etc/greeting").unwrap(),
        "hello from the host\n"
    );
    assert!(mounts.get("/data").unwrap().read_only());
    assert!(mounts.get("/etc/greeting").unwrap().read_only());
    let e = std::fs::write("/data/new", "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::write("/etc/greeting", "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
}

#[rstest]
#[isolated(bind = ["fixtures/bind-data:/srv/deep/data"], writes = ["/nothing"])]
fn mount_points_the_harness_makes_are_not_writes(changes: Changes) {
    assert!(std::path::Path::new("/srv/deep/data/greeting.txt").exists());
    assert_eq!(changes.list(), []);
}

/// Writes through an `rw` bind reach the host: the outer test reads what the sandbox wrote.
#[isolated(bind = ["/tmp:/host-tmp:rw"])]
#[ignore = "writes to the host; run by binds::rw_writes_reach_the_host"]
fn writes_through_rw_bind() {
    let name = std::env::var("ISOTEST_RW_PROBE").expect("ISOTEST_RW_PROBE names the file");
    std::fs::write(format!("/host-tmp/{name}"), "from the sandbox").unwrap();
}

#[test]
fn rw_writes_reach_the_host() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let name = format!(
        "{}/probe",
        dir.path().file_name().unwrap().to_str().unwrap()
    );
    let (passed, out) = crate::run_alone(
        "binds::writes_through_rw_bind",
        &[("ISOTEST_RW_PROBE", &name)],
    );
    assert!(passed, "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("probe")).unwrap(),
        "from the sandbox"
    );
}

#[isolated(bind = ["fixtures/no-such-dir:/data"])]
#[should_panic(expected = "invalid bind")]
fn missing_source_is_refused_before_the_sandbox_starts() {
    unreachable!("the sandbox never starts");
}
