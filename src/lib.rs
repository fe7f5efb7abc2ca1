//! # isotest
//!
//! Run an ordinary Rust test inside fresh Linux namespaces (user, mount, pid, uts, ipc, net,
//! cgroup), `pivot_root`ed into a copy-on-write root filesystem of its own, with `/proc`, `/sys`
//! and `/dev` mounted, its own hostname and a loopback-only network; teardown checks fail the
//! test when it leaks a process, a mount or a write.
//!
//! ## Quickstart
//!
//! ```no_run
//! use isotest::isolated;
//!
//! #[isolated(hostname = "web1")]
//! fn installer_writes_only_its_config() {
//!     std::fs::write("/etc/myapp.conf", "x").unwrap(); // lands in this test's overlay only
//!     assert_eq!(std::process::id(), 1); // PID 1 of its own pid namespace
//! }
//! ```
//!
//! `cargo test` runs it: the test thread becomes a supervisor that starts a sandbox and
//! re-executes the test binary inside it, filtered to exactly this test. The first test builds
//! the root filesystem (`ubuntu:jammy` unless `ISOTEST_ROOTFS` or `rootfs = "..."` names
//! another; see [`rootfs`]) into a cache; later ones start from it in milliseconds.
//!
//! ## What the attribute expands to
//!
//! ```ignore
//! #[test]
//! fn installer_writes_only_its_config() {
//!     ::isotest::__private::run(
//!         &::isotest::__private::Meta {
//!             name: "installer_writes_only_its_config",
//!             module_path: ::core::module_path!(),
//!             manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
//!             hostname: ::core::option::Option::Some("web1"),
//!             ..::isotest::__private::Meta::DEFAULT
//!         },
//!         move || { /* the body */ },
//!     )
//! }
//! ```
//!
//! Each argument fills one field of `Meta`:
//!
//! ## `hostname = "web1"`
//!
//! The sandbox's hostname (RFC 1123, checked at compile time). Default: the function's name
//! made into a hostname. Expands to `hostname: Some("web1")`.
//!
//! ## `rootfs = "debian:bookworm"`
//!
//! The root filesystem spec: `ubuntu:jammy`, `debian:12`, `tar:PATH`, `dir:PATH`, an absolute
//! path or `host` (see [`rootfs::Spec`]). Default: `ISOTEST_ROOTFS`, else `ubuntu:jammy`.
//! Expands to `rootfs: Some("debian:bookworm")`.
//!
//! ## `timeout = "30s"`
//!
//! Kills the sandbox's whole pid namespace after this long and fails the test with `timed out
//! after 30s`. Default: 60 s, or `ISOTEST_TIMEOUT`. Expands to `timeout_ms: Some(30000)`.
//!
//! ## `writes = ["/etc/myapp"]`
//!
//! Where the test may write; any other path created, changed or deleted in the root fails the
//! test at teardown. Default: not checked. Expands to `writes: Some(&["/etc/myapp"])`.
//!
//! ## `bind = ["fixtures/data:/data:ro"]`
//!
//! Host paths bound into the sandbox, `SRC:DST[:ro|rw]` (`ro` by default; a relative `SRC` is
//! relative to the crate's manifest directory). Expands to `bind: &["fixtures/data:/data:ro"]`.
//!
//! ## `allow_leaks = ["processes", "mounts"]`
//!
//! Skips the teardown checks for processes left running or mounts left mounted. Expands to
//! `allow_leaks: &["processes", "mounts"]`.
//!
//! ## `privileged = true`
//!
//! No user namespace: the test's root is the host's root. **No isolation boundary**; needs
//! root. Expands to `privileged: true`.
//!
//! ## Beyond tests
//!
//! [`Sandbox`] runs any program from the root filesystem like [`std::process::Command`];
//! [`harness`] turns a folder of cases into tests; [`fixtures`] gives rstest fixtures about the
//! sandbox from inside it.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

// Everything that makes a sandbox is Linux's: elsewhere the crate compiles, and an isolated test
// fails with "isotest requires Linux".
#[cfg(target_os = "linux")]
mod cgroup;
#[cfg(target_os = "linux")]
pub mod cli;
#[cfg(target_os = "linux")]
mod command;
pub mod config;
#[cfg(target_os = "linux")]
pub mod doctor;
pub mod error;
#[cfg(target_os = "linux")]
pub mod fixtures;
#[cfg(target_os = "linux")]
pub mod harness;
#[cfg(target_os = "linux")]
mod idmap;
#[cfg(target_os = "linux")]
mod plan;
#[cfg(target_os = "linux")]
pub mod preflight;
#[cfg(target_os = "linux")]
pub mod rootfs;
#[cfg(target_os = "linux")]
mod sandbox;
#[cfg(target_os = "linux")]
mod spawn;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(target_os = "linux")]
mod teardown;
#[cfg(target_os = "linux")]
mod test;
#[cfg(target_os = "linux")]
mod trace;
mod validate;

#[cfg(target_os = "linux")]
pub use command::{Child, Command, ExitStatus, Output, Sandbox, Stdio, DEFAULT_PATH};
pub use config::Config;
pub use error::{Error, Result};
pub use isotest_macros::isolated;

#[doc(hidden)]
pub mod __private;
