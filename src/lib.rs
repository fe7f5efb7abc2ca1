//! # isotest
//!
//! Run an ordinary Rust test inside fresh Linux namespaces, on a copy-on-write root filesystem.
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
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

mod cgroup;
pub mod cli;
mod command;
pub mod config;
pub mod doctor;
pub mod error;
pub mod fixtures;
pub mod harness;
pub mod plan;
pub mod preflight;
pub mod rootfs;
pub mod sandbox;
pub mod spawn;
mod sys;
mod teardown;
mod test;
mod trace;
mod validate;

pub use command::{Child, Command, ExitStatus, Output, Sandbox, Stdio, DEFAULT_PATH};
pub use config::Config;
pub use error::{Error, Result};
pub use isotest_macros::isolated;

#[doc(hidden)]
pub mod __private;
