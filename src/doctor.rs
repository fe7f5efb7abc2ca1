//! `isotest doctor`: checks, one line each, that this machine can run sandboxes, and says how
//! to fix what is missing.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::Error;
use crate::sandbox::msg;
use crate::{plan, spawn, sys};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Missing, but only some uses need it.
    Warn,
    /// Missing, and sandboxes need it.
    Fail,
}

/// One check: what was looked at, what was found, and the fix when it is not ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The outcome.
    pub status: Status,
    /// What was checked.
    pub name: &'static str,
    /// What was found.
    pub detail: String,
    /// What to do about it, when not ok.
    pub fix: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag}  {}: {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "; {fix}")?;
        }
        Ok(())
    }
}

fn check(status: Status, name: &'static str, detail: String, fix: Option<String>) -> Check {
    Check {
        status,
        name,
        detail,
        fix,
    }
}

/// `isotest doctor`: no options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DoctorArgs {}

/// Runs every check, prints one line each, and returns the exit status: 1 when a check
/// failed, else 0.
pub fn main(_args: DoctorArgs) -> i32 {
    let checks = run();
    for c in &checks {
        println!("{c}");
    }
    i32::from(checks.iter().any(|c| c.status == Status::Fail))
}

/// Runs every check.
pub fn run() -> Vec<Check> {
    let userns = user_namespaces();
    let userns_ok = userns.iter().all(|c| c.status == Status::Ok);
    let mut checks = vec![kernel()];
    checks.extend(userns);
    checks.push(overlay_listed());
    checks.push(pivot_root_possible());
    checks.push(sandbox_probe(userns_ok));
    checks.push(bootstrap_tools());
    checks.push(pids_limit());
    checks.push(cache());
    checks
}

/// How the process limit of a sandbox (`pids_max`) is enforced here.
fn pids_limit() -> Check {
    match crate::cgroup::parent() {
        Some(parent) => check(
            Status::Ok,
            "process limit",
            format!("a pids cgroup per sandbox under {}", parent.display()),
            None,
        ),
        None => check(
            Status::Warn,
            "process limit",
            "no writable pids cgroup: RLIMIT_NPROC in the sandbox's user namespace only".into(),
            Some(
                "delegate the pids controller to your cgroup (systemd: Delegate=pids) for an exact \
                 count of processes and threads"
                    .into(),
            ),
        ),
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn kernel() -> Check {
    let Some(release) = read_trim("/proc/sys/kernel/osrelease") else {
        return check(
            Status::Fail,
            "kernel",
            "cannot read /proc/sys/kernel/osrelease".into(),
            Some("isotest needs Linux with /proc mounted".into()),
        );
    };
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if version >= (6, 6) {
        check(Status::Ok, "kernel", format!("Linux {release}"), None)
    } else if version >= (5, 12) {
        check(
            Status::Warn,
            "kernel",
            format!("Linux {release}: older than 6.6, tmpfs has no user xattrs for overlayfs' userxattr"),
            Some("upgrade to Linux 6.6 or later".into()),
        )
    } else {
        check(
            Status::Fail,
            "kernel",
            format!("Linux {release}: older than 5.12 (clone3 with pidfds, mount_setattr, overlayfs in user namespaces)"),
            Some("upgrade to Linux 6.6 or later".into()),
        )
    }
}

fn user_namespaces() -> Vec<Check> {
    let root = sys::ids().0 == 0;
    let mut checks = Vec::new();
    match read_trim("/proc/sys/user/max_user_namespaces").and_then(|v| v.parse::<u64>().ok()) {
        Some(0) => checks.push(check(
            Status::Fail,
            "user namespaces",
            "user.max_user_namespaces=0".into(),
            Some("run `sudo sysctl -w user.max_user_namespaces=15000`".into()),
        )),
        Some(n) => checks.push(check(
            Status::Ok,
            "user namespaces",
            format!("user.max_user_namespaces={n}"),
            None,
        )),
        None => checks.push(check(
            Status::Fail,
            "user namespaces",
            "/proc/sys/user/max_user_namespaces is missing".into(),
            Some("build the kernel with CONFIG_USER_NS=y".into()),
        )),
    }
    if let Some(v) = read_trim("/proc/sys/kernel/unprivileged_userns_clone") {
        let ok = v != "0" || root;
        checks.push(check(
            if ok { Status::Ok } else { Status::Fail },
            "unprivileged user namespaces",
            format!(
                "kernel.unprivileged_userns_clone={v}{}",
                if root && v == "0" {
                    " (running as root)"
                } else {
                    ""
                }
            ),
            (!ok).then(|| {
                "run `sudo sysctl -w kernel.unprivileged_userns_clone=1` or run as root".into()
            }),
        ));
    }
    if let Some(v) = read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        let ok = v == "0" || root;
        checks.push(check(
            if ok { Status::Ok } else { Status::Fail },
            "AppArmor user namespace restriction",
            format!("kernel.apparmor_restrict_unprivileged_userns={v}{}", if root && v != "0" { " (running as root)" } else { "" }),
            (!ok).then(|| "run `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or run as root".into()),
        ));
    }
    checks
}

fn overlay_listed() -> Check {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    if listed {
        check(
            Status::Ok,
            "overlayfs",
            "listed in /proc/filesystems".into(),
            None,
        )
    } else {
        check(
            Status::Fail,
            "overlayfs",
            "not in /proc/filesystems".into(),
            Some("run `sudo modprobe overlay` (and add `overlay` to /etc/modules-load.d)".into()),
        )
    }
}

fn pivot_root_possible() -> Check {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root_fs = mountinfo.lines().find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (fields.get(4) == Some(&"/")).then(|| fields.get(dash + 1).copied().unwrap_or("?"))
    });
    match root_fs {
        Some("rootfs") => check(
            Status::Fail,
            "pivot_root",
            "/ is the initial rootfs (initramfs), which pivot_root cannot move".into(),
            Some(
                "run from a system booted onto a real root file system, or switch_root first"
                    .into(),
            ),
        ),
        Some(fs) => check(Status::Ok, "pivot_root", format!("/ is {fs}"), None),
        None => check(
            Status::Warn,
            "pivot_root",
            "no / in /proc/self/mountinfo".into(),
            Some("mount /proc".into()),
        ),
    }
}

/// Builds a whole sandbox over an empty lower layer and lets the exec fail: an exec failure
/// means every step before it (user namespace, overlay with userxattr, /proc, /dev, pivot)
/// worked.
fn sandbox_probe(userns_ok: bool) -> Check {
    let name = "sandbox in a user namespace";
    let lower = std::env::temp_dir().join(format!("isotest-doctor-{}", std::process::id()));
    let result = probe(&lower);
    let _ = std::fs::remove_dir_all(&lower);
    match result {
        Ok(()) => check(
            Status::Ok,
            name,
            "overlay, /proc, /dev and pivot_root all work".into(),
            None,
        ),
        Err(e) => check(
            Status::Fail,
            name,
            e.to_string(),
            Some(if userns_ok {
                "see the failing call; `dmesg` may say more".into()
            } else {
                "fix the user namespace checks above".into()
            }),
        ),
    }
}

fn probe(lower: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(lower).map_err(|source| Error::Io {
        context: "creating",
        path: lower.into(),
        source,
    })?;
    let mut config = Config::new();
    config.hostname = "isotest-doctor".into();
    let devnull = |flags| sys::open(Path::new("/dev/null"), flags);
    let stdio = spawn::Stdio {
        stdin: devnull(libc::O_RDONLY)?,
        stdout: devnull(libc::O_WRONLY)?,
        stderr: devnull(libc::O_WRONLY)?,
    };
    let exec = |_| {
        let path = sys::cstring(b"/isotest-doctor-probe")?;
        Ok(crate::sandbox::ExecSpec::new(
            None,
            path.clone(),
            vec![path],
            Vec::new(),
        ))
    };
    let pivot = vec![plan::Step::Pivot(plan::NEW_ROOT.into())];
    let s = spawn::spawn(&config, lower, stdio, exec, false, pivot)?;
    let mut buf = [0u8; 64];
    let reply = sys::read(std::os::fd::AsRawFd::as_raw_fd(&s.channel), &mut buf);
    let exit = sys::waitid_pidfd(&s.pidfd)?;
    match reply {
        Ok(n) if n >= 9 && buf[0] == msg::EXEC_FAILED => Ok(()),
        Ok(n) if n >= 9 && buf[0] == msg::STEP_FAILED => {
            let errno = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let index = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
            Err(crate::sandbox::step_error(&s.steps, index, errno))
        }
        _ => Err(Error::Child(format!(
            "the probe sandbox ended with {exit} without a report"
        ))),
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn bootstrap_tools() -> Check {
    let found: Vec<String> = ["mmdebstrap", "debootstrap"]
        .iter()
        .filter_map(|p| on_path(p).map(|p| p.display().to_string()))
        .collect();
    if found.is_empty() {
        check(
            Status::Warn,
            "rootfs builder",
            "neither mmdebstrap nor debootstrap is on PATH (needed only for debian:/ubuntu: specs)"
                .into(),
            Some("run `sudo apt-get install mmdebstrap`".into()),
        )
    } else {
        check(Status::Ok, "rootfs builder", found.join(", "), None)
    }
}

/// The cache directory: `ISOTEST_CACHE`, else `$XDG_CACHE_HOME/isotest`, else
/// `~/.cache/isotest`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("ISOTEST_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("isotest")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/isotest")))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

fn cache() -> Check {
    match cache_dir() {
        None => check(
            Status::Warn,
            "cache",
            "no ISOTEST_CACHE, XDG_CACHE_HOME or HOME".into(),
            Some("set ISOTEST_CACHE to a writable directory".into()),
        ),
        Some(dir) if dir.exists() => {
            let mib = dir_size(&dir) as f64 / (1024.0 * 1024.0);
            check(
                Status::Ok,
                "cache",
                format!("{} ({mib:.1} MiB)", dir.display()),
                None,
            )
        }
        Some(dir) => check(
            Status::Ok,
            "cache",
            format!("{} (not created yet)", dir.display()),
            None,
        ),
    }
}
