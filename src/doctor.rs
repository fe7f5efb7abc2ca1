//! `isotest doctor`: checks, one line each, that this machine can run sandboxes, and says how
//! to fix what is missing.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::Error;
use crate::sandbox::msg;
use crate::{plan, preflight, spawn, sys};

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
    let mut checks = kernel_support(&preflight::probe());
    let userns_ok = checks
        .iter()
        .all(|c| c.name != "user namespaces" || c.status == Status::Ok);
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

/// The kernel, user namespaces and overlayfs, judged as every isolated test judges them before
/// it starts (see [`preflight::diagnose`]): one line per topic, or one per problem found.
fn kernel_support(probe: &preflight::Probe) -> Vec<Check> {
    let problems = preflight::diagnose(probe, false);
    let fine = |topic: &str| match topic {
        "kernel" => format!("Linux {}", probe.release),
        "user namespaces" => match probe.max_user_namespaces {
            Some(n) => format!("user.max_user_namespaces={n}"),
            None => "available".into(),
        },
        _ => "available".into(),
    };
    let mut checks = Vec::new();
    for topic in ["kernel", "user namespaces", "overlayfs"] {
        let found: Vec<_> = problems.iter().filter(|p| p.topic == topic).collect();
        if found.is_empty() {
            checks.push(check(Status::Ok, topic, fine(topic), None));
        }
        for p in found {
            checks.push(check(
                Status::Fail,
                topic,
                p.what.clone(),
                Some(p.fix.clone()),
            ));
        }
    }
    checks
}

fn pivot_root_possible() -> Check {
    let mounts = crate::fixtures::Mounts::read().unwrap_or_default();
    let root_fs = mounts.get("/").map(|m| m.fs_type.as_str());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> preflight::Probe {
        preflight::Probe {
            release: "6.18.0-test".into(),
            kernel: (6, 18),
            root: false,
            user_namespaces: true,
            max_user_namespaces: Some(100),
            unprivileged_userns_clone: None,
            apparmor_restrict_unprivileged_userns: None,
            overlay: true,
        }
    }

    #[test]
    fn one_ok_line_per_topic_on_a_good_machine() {
        let lines: Vec<String> = kernel_support(&probe())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "ok    kernel: Linux 6.18.0-test",
                "ok    user namespaces: user.max_user_namespaces=100",
                "ok    overlayfs: available",
            ]
        );
    }

    #[test]
    fn problems_are_the_ones_tests_would_fail_with() {
        let p = preflight::Probe {
            kernel: (5, 15),
            apparmor_restrict_unprivileged_userns: Some(1),
            overlay: false,
            ..probe()
        };
        let checks = kernel_support(&p);
        let line = |name: &str| checks.iter().find(|c| c.name == name).unwrap().to_string();
        assert!(line("kernel").starts_with("FAIL  kernel: kernel 5.15 is too old"));
        assert!(line("user namespaces")
            .contains("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"));
        assert!(line("overlayfs").contains("modprobe overlay"));
    }
}
