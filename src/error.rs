//! The one error type of isotest. Messages are lowercase, name the value or call that failed
//! and, where a person can act, say what to do.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while preparing, running or checking a sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option has a value isotest cannot use.
    #[error("invalid {option} {value:?}: {problem}")]
    InvalidOption {
        /// The option's name, as written in `#[isolated(...)]` or the builder.
        option: &'static str,
        /// The rejected value.
        value: String,
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// No root filesystem was configured.
    #[error(
        "no root filesystem configured for test `{test}`; set one with #[isolated(rootfs = \"/path/to/rootfs\")] \
         or the ISOTEST_ROOTFS environment variable (an absolute directory or dir:PATH)"
    )]
    NoRootfs {
        /// The test (or program) that needed one.
        test: String,
    },

    /// A root filesystem spec could not be turned into a directory.
    #[error("root filesystem {spec:?}: {problem}")]
    Rootfs {
        /// The spec as given.
        spec: String,
        /// What went wrong and what to do.
        problem: String,
    },

    /// The kernel or the environment lacks something isotest needs.
    #[error("{what}; {fix}")]
    Unsupported {
        /// What is missing.
        what: String,
        /// How to get it.
        fix: String,
    },

    /// A system call failed; carries the call with its arguments.
    #[error("{call}: {errno}")]
    Sys {
        /// The call and its arguments, e.g. `mount("overlay", "/tmp/root")`.
        call: String,
        /// The error the kernel returned.
        errno: Errno,
    },

    /// Setting up the sandbox failed inside the child before the test started.
    #[error("sandbox setup failed: {0}")]
    Setup(String),

    /// An I/O operation on a host file failed.
    #[error("{context} {path}: {source}", path = .path.display())]
    Io {
        /// What isotest was doing.
        context: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The program of a [`Command`](crate::Command) could not be executed in the sandbox.
    #[error(
        "cannot execute {program:?} in root filesystem {rootfs:?}: {errno}; the program is looked \
         up inside the root filesystem, not on the host"
    )]
    Exec {
        /// The program as given.
        program: String,
        /// The root filesystem spec it was looked up in.
        rootfs: String,
        /// Why `execve` failed (`ENOENT` when it is not there).
        errno: Errno,
    },

    /// The sandbox did not finish in time.
    #[error("timed out after {}", crate::config::format_duration(*.0))]
    Timeout(Duration),

    /// The sandboxed child ended without reporting a result.
    #[error("{0}")]
    Child(String),
}

/// The result type of isotest.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An errno value with its symbolic name (`EPERM`) when displayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = errno_name(self.0);
        let text = std::io::Error::from_raw_os_error(self.0);
        let text = text.to_string();
        let text = text.split(" (os error").next().unwrap_or_default();
        match name {
            Some(name) => write!(f, "{name} ({text})"),
            None => write!(f, "errno {} ({text})", self.0),
        }
    }
}

/// The symbolic name of the errno values a sandbox can meet.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EUSERS => "EUSERS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return None,
    })
}
