//! A `pids` cgroup per sandbox: the limit on processes and threads that contains a fork bomb.
//!
//! A `pids` cgroup counts exactly the sandbox's processes and threads. (The plan also sets
//! `RLIMIT_NPROC`, which inside the sandbox's own user namespace counts only the sandbox's
//! processes: the limit that holds where no cgroup can be made, e.g. rootless.) The
//! supervisor makes one beside its own cgroup — in cgroup v2 where the `pids` controller is
//! delegated to it, else in cgroup v1's `pids` hierarchy (hybrid hosts) — sets `pids.max`, moves
//! the child in before the child goes on past the handshake (so everything it starts is
//! counted), and removes the cgroup once the child is reaped. Cgroups left by a killed
//! supervisor are removed by the next one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of the cgroups isotest makes: `isotest-<supervisor pid>-<n>`.
const PREFIX: &str = "isotest-";

/// A cgroup made for one sandbox; removed on drop.
#[derive(Debug)]
pub struct PidsCgroup {
    path: PathBuf,
}

impl PidsCgroup {
    /// Makes a cgroup with `pids.max = max`, or `None` where no `pids` controller is writable.
    pub fn create(max: u64) -> Option<PidsCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent()?.join(format!("{PREFIX}{}-{n}", std::process::id()));
        std::fs::create_dir(&path).ok()?;
        let cgroup = PidsCgroup { path };
        std::fs::write(cgroup.path.join("pids.max"), max.to_string()).ok()?;
        Some(cgroup)
    }

    /// Moves the process `pid` (and so everything it starts from now on) into the cgroup.
    pub fn add(&self, pid: libc::pid_t) -> crate::Result<()> {
        let file = self.path.join("cgroup.procs");
        crate::sys::write_file(&file.to_string_lossy(), &pid.to_string())
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // The child is reaped, so the cgroup empties as soon as the kernel has finished the
        // exits of the rest of the pid namespace: retry briefly while it is busy.
        for _ in 0..200 {
            match std::fs::remove_dir(&self.path) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                _ => return,
            }
        }
    }
}

/// Where this process's sandboxes get their cgroups: the first of [`candidates`] where a
/// cgroup with a writable `pids.max` can be made, found once per process (which also removes
/// cgroups that killed supervisors left behind).
pub(crate) fn parent() -> Option<&'static Path> {
    static PARENT: once_cell::sync::OnceCell<Option<PathBuf>> = once_cell::sync::OnceCell::new();
    PARENT
        .get_or_init(|| {
            let probe = format!("{PREFIX}{}-probe", std::process::id());
            candidates().into_iter().find(|parent| {
                sweep(parent);
                let path = parent.join(&probe);
                if std::fs::create_dir(&path).is_err() {
                    return false;
                }
                // cgroup v2 without the pids controller delegated has no pids.max.
                let works = std::fs::write(path.join("pids.max"), "max").is_ok();
                let _ = std::fs::remove_dir(&path);
                works
            })
        })
        .as_deref()
}

/// Where a sandbox's cgroup may go: beside this process's cgroup in the v2 hierarchy, then in
/// the v1 `pids` hierarchy.
fn candidates() -> Vec<PathBuf> {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let Ok(mounts) = crate::fixtures::Mounts::read() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if id == "0" && controllers.is_empty() {
            mounts.iter().find(|m| m.fs_type == "cgroup2")
        } else if controllers.split(',').any(|c| c == "pids") {
            mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == "pids"))
        } else {
            None
        };
        if let Some(m) = mount {
            let dir = Path::new(&m.mount_point).join(path.trim_start_matches('/'));
            if id == "0" {
                out.insert(0, dir);
            } else {
                out.push(dir);
            }
        }
    }
    out
}

/// Removes cgroups left by supervisors that no longer run (killed with `kill -9`).
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}
