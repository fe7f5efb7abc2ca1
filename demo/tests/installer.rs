//! The installer's tests: each runs as root in a fresh root filesystem of its own, so they can
//! write /etc, add users and bind ports, in parallel, without touching the machine they run on.

use std::fs;
use std::os::unix::fs::MetadataExt;

use isotest::isolated;
use rstest::rstest;

#[isolated(hostname = "web1")]
fn installs_config_user_and_state_dir() {
    isotest_demo::install(8080).unwrap();
    assert_eq!(
        fs::read_to_string("/etc/myapp/myapp.conf").unwrap(),
        "listen = 127.0.0.1:8080\n"
    );
    let uid: u32 = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", "myapp"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    assert_eq!(fs::metadata("/var/lib/myapp").unwrap().uid(), uid);
    // The sandbox is a machine of its own.
    assert_eq!(std::process::id(), 1);
}

#[isolated]
fn starts_from_a_clean_root_every_time() {
    // Whatever another test installed is not here.
    assert!(!std::path::Path::new("/etc/myapp").exists());
    isotest_demo::install(9000).unwrap();
    isotest_demo::uninstall().unwrap();
    assert!(!std::path::Path::new("/etc/myapp").exists());
}

#[rstest]
#[case(8080)]
#[case(8081)]
#[isolated]
fn the_configured_port_can_be_bound(#[case] port: u16) {
    isotest_demo::install(port).unwrap();
    let conf = fs::read_to_string("/etc/myapp/myapp.conf").unwrap();
    let addr = conf.trim().strip_prefix("listen = ").unwrap();
    // Loopback of its own: every case may bind the same ports.
    std::net::TcpListener::bind(addr).unwrap();
}
