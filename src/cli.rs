//! The `isotest run` command: arguments and what they do. The `isotest` binary only parses
//! and dispatches; everything else is here, on top of [`Sandbox`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::command::{pollfd, Child, Sandbox};
use crate::config::{Bind, Config};
use crate::error::{Error, Result};
use crate::{sys, validate};

/// Exit status of `isotest run` when isotest itself failed (bad setup, exec failure).
pub const EXIT_FAILURE: i32 = 125;
/// Exit status of `isotest run` when the timeout killed the program (as timeout(1)).
pub const EXIT_TIMEOUT: i32 = 124;

/// `isotest run`: run a program from a root filesystem in a fresh sandbox.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The program runs as PID 1 of fresh namespaces, on a copy-on-write overlay of the root \
filesystem: what it writes is gone when it exits (unless --keep). It starts with a clean \
environment (PATH, HOME=/root, TERM) in /.

With a terminal on stdin and stdout, the program gets a pseudo-terminal of its own as its \
controlling terminal: Ctrl-C, job control and window size reach it. Otherwise its standard \
streams are isotest's own.

isotest exits with the program's exit code, 128+N if signal N killed it, 124 on timeout and \
125 when the sandbox could not be set up or the program not executed.

Examples:
  isotest run -- /bin/bash
  isotest run --rootfs debian:bookworm -- /bin/bash
  isotest run --hostname web1 --bind ./conf:/etc/myapp:ro -- myapp --check
  isotest run --keep /var/tmp/changes -- apt-get install -y curl")]
pub struct RunArgs {
    /// Root filesystem: ubuntu:jammy, ubuntu:noble, debian:bookworm, tar:PATH, dir:PATH, an absolute directory or host [default: $ISOTEST_ROOTFS, else ubuntu:jammy]
    #[arg(long, value_name = "SPEC")]
    pub rootfs: Option<String>,

    /// Hostname inside the sandbox (RFC 1123)
    #[arg(long, value_name = "NAME", default_value = "isotest", value_parser = parse_hostname)]
    pub hostname: String,

    /// Bind a host path into the sandbox, read-only unless :rw (repeatable)
    #[arg(long = "bind", value_name = "SRC:DST[:ro|rw]", value_parser = parse_bind)]
    pub binds: Vec<Bind>,

    /// Set an environment variable in the sandbox (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Working directory inside the sandbox
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub cwd: String,

    /// Kill the sandbox after this long: 500ms, 30s, 2m [default: no limit]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Keep what the program wrote: the overlay's upper layer lives in DIR/upper (DIR/work is
    /// overlayfs' scratch, removed on exit). Writes then reach the host disk
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,

    /// Size of each tmpfs of the sandbox (the writable layer, /tmp, /dev/shm): 64m, 1g, 25%
    /// [default: half the RAM]
    #[arg(long, value_name = "SIZE", value_parser = parse_tmpfs_size)]
    pub tmpfs_size: Option<String>,

    /// Most processes the sandbox may have at once (a pids cgroup where one is writable, and RLIMIT_NPROC)
    #[arg(long, value_name = "N", default_value_t = isotest_pids_max(), value_parser = clap::value_parser!(u64).range(1..))]
    pub pids_max: u64,

    /// The program (a path in the root filesystem, or a name looked up in its PATH) and its
    /// arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    pub command: Vec<String>,
}

const fn isotest_pids_max() -> u64 {
    crate::config::DEFAULT_PIDS_MAX
}

fn parse_tmpfs_size(s: &str) -> std::result::Result<String, String> {
    validate::tmpfs_size(s).map(|()| s.to_string())
}

fn parse_hostname(s: &str) -> std::result::Result<String, String> {
    validate::hostname(s).map(|()| s.to_string())
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    validate::duration(s)
}

/// Parses `SRC:DST[:ro|rw]`; a relative `SRC` is taken from the current directory.
pub fn parse_bind(s: &str) -> std::result::Result<Bind, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    Bind::parse(s, &cwd.to_string_lossy()).map_err(|e| e.to_string())
}

/// Parses `KEY=VALUE`.
pub fn parse_env(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Runs `isotest run`; returns the exit status for the process.
pub fn run(args: RunArgs) -> i32 {
    match run_inner(&args) {
        Ok(code) => code,
        Err(e @ Error::Timeout(_)) => {
            eprintln!("isotest: {} {e}", args.command[0]);
            EXIT_TIMEOUT
        }
        Err(e) => {
            eprintln!("isotest: {e}");
            EXIT_FAILURE
        }
    }
}

fn run_inner(args: &RunArgs) -> Result<i32> {
    let mut config = Config::new();
    config.rootfs = args.rootfs.clone();
    config.hostname = args.hostname.clone();
    // No limit unless asked: an interactive shell may run for hours.
    config.timeout = args.timeout.unwrap_or(Duration::MAX);
    config.tmpfs_size = args.tmpfs_size.clone();
    config.pids_max = Some(args.pids_max);
    if let Some(keep) = &args.keep {
        std::fs::create_dir_all(keep).map_err(|source| Error::Io {
            context: "creating the --keep directory",
            path: keep.clone(),
            source,
        })?;
        config.keep = Some(std::fs::canonicalize(keep).map_err(|source| Error::Io {
            context: "resolving the --keep directory",
            path: keep.clone(),
            source,
        })?);
    }
    let mut sandbox = Sandbox::new(config.clone()).cwd(args.cwd.clone());
    for (k, v) in &args.env {
        sandbox = sandbox.env(k.clone(), v.clone());
    }
    for b in &args.binds {
        sandbox = sandbox.bind(b.clone());
    }
    let mut command = sandbox.command(args.command[0].clone(), args.command[1..].to_vec());
    let status = if sys::isatty(0) && sys::isatty(1) {
        interactive(&mut command)
    } else {
        command.status()
    };
    if let Some(keep) = &config.keep {
        remove_work_dir(keep);
    }
    Ok(status?.shell_code())
}

/// overlayfs' work dir (with a mode-000 `work/work`) is not part of the layer.
fn remove_work_dir(keep: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let work = keep.join("work");
    let _ = std::fs::set_permissions(work.join("work"), std::fs::Permissions::from_mode(0o700));
    let _ = std::fs::remove_dir_all(&work);
}

/// The host terminal's settings, restored when dropped.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Result<Self> {
        let saved = sys::tcgetattr(0)?;
        let mut raw = saved;
        sys::cfmakeraw(&mut raw);
        sys::tcsetattr(0, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = sys::tcsetattr(0, &self.saved);
    }
}

/// Runs the program on a pseudo-terminal of its own: the slave is its controlling terminal,
/// the host terminal is in raw mode (so Ctrl-C is a byte for the program's terminal to turn
/// into SIGINT), bytes are relayed both ways and window size changes follow the host's.
fn interactive(command: &mut crate::Command) -> Result<crate::ExitStatus> {
    let master = sys::posix_openpt()?;
    sys::grantpt(&master)?;
    sys::unlockpt(&master)?;
    let slave = sys::open(&sys::ptsname(&master)?, libc::O_RDWR | libc::O_NOCTTY)?;
    if let Ok(ws) = sys::ioctl_tiocgwinsz(0) {
        sys::ioctl_tiocswinsz(master.as_raw_fd(), &ws)?;
    }
    // The slave starts as the host terminal is now (echo, line editing); raw mode is only
    // for the host side.
    if let Ok(t) = sys::tcgetattr(0) {
        let _ = sys::tcsetattr(slave.as_raw_fd(), &t);
    }
    let winch = sys::signalfd(libc::SIGWINCH)?;
    let mut child = command.terminal(slave).spawn()?;
    let raw = RawMode::enter()?;
    let result = relay(&mut child, &master, &winch);
    drop(raw);
    result
}

fn relay(child: &mut Child, master: &OwnedFd, winch: &OwnedFd) -> Result<crate::ExitStatus> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let m = master.as_raw_fd();
    loop {
        let mut fds = [
            pollfd(if stdin_open { 0 } else { -1 }),
            pollfd(m),
            pollfd(winch.as_raw_fd()),
            pollfd(child.pidfd.as_raw_fd()),
        ];
        if sys::poll(&mut fds, child.wait_ms())? == 0 {
            return Err(child.time_out());
        }
        if fds[0].revents != 0 {
            match sys::read(0, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = sys::write_all(m, &buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
        if fds[1].revents != 0 {
            match sys::read(m, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = sys::write_all(1, &buf[..n]);
                }
                // EIO: no process holds the slave any more.
                _ => break,
            }
        }
        if fds[2].revents != 0 {
            let _ = sys::read(winch.as_raw_fd(), &mut buf);
            if let Ok(ws) = sys::ioctl_tiocgwinsz(0) {
                let _ = sys::ioctl_tiocswinsz(m, &ws);
            }
        }
        if fds[3].revents != 0 {
            break;
        }
    }
    // The program is gone (and with it the sandbox): pass on what it wrote last.
    sys::set_nonblocking(m)?;
    while let Ok(n) = sys::read(m, &mut buf) {
        if n == 0 {
            break;
        }
        let _ = sys::write_all(1, &buf[..n]);
    }
    child.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse_and_name_bad_values() {
        let cwd = std::env::current_dir().unwrap();
        let b = parse_bind("./c:/etc/c:rw").unwrap();
        assert_eq!(b.source, cwd.join("./c"));
        assert_eq!(b.destination, "/etc/c");
        assert!(!b.readonly);
        assert!(
            parse_bind("/a:/b").unwrap().readonly,
            "read-only by default"
        );
        assert!(parse_bind("/a:/b:ro").unwrap().readonly);
        for bad in ["nocolon", "/a:/b:rx", "/a:rel", ":/b", "/a:/b:ro:x"] {
            let e = parse_bind(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn env_parses_key_value() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(parse_env("A=").unwrap(), ("A".into(), String::new()));
        assert!(parse_env("novalue").unwrap_err().contains("novalue"));
        assert!(parse_env("=x").is_err());
    }
}
