//! A `pids` cgroup per sandbox: the limit on processes and threads that contains a fork bomb.
//!
//! `RLIMIT_NPROC` cannot do it: it counts every process of the real uid across the whole system
//! (the identity map keeps the sandbox's root kuid 0, so the host's root shares the count) and it
//! does not stop root anyway. A `pids` cgroup counts exactly the sandbox's processes. The
//! supervisor makes one beside its own cgroup — in cgroup v2 where the `pids` controller is
//! delegated to it, else in cgroup v1's `pids` hierarchy (hybrid hosts) — sets `pids.max`, moves
//! the child in before the child goes on past the handshake (so everything it starts is
//! counted), and removes the cgroup once the child is reaped. Where neither is writable there is
//! no limit. Cgroups left by a killed supervisor are removed by the next one.

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
        static SWEPT: std::sync::Once = std::sync::Once::new();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        let parents = candidates();
        SWEPT.call_once(|| parents.iter().for_each(|p| sweep(p)));
        for parent in parents {
            let path = parent.join(&name);
            if std::fs::create_dir(&path).is_err() {
                continue;
            }
            let cgroup = PidsCgroup { path };
            if std::fs::write(cgroup.path.join("pids.max"), max.to_string()).is_ok() {
                return Some(cgroup);
            }
            // No pids controller here (cgroup v2 without it delegated): try the next one.
        }
        None
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

/// Where a sandbox's cgroup may go: beside this process's cgroup in the v2 hierarchy, then in
/// the v1 `pids` hierarchy.
fn candidates() -> Vec<PathBuf> {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    // (mount point, fs type, super options)
    let mounts: Vec<(&str, &str, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((*f.get(4)?, *f.get(sep + 1)?, *f.get(sep + 3)?))
        })
        .collect();
    let mut out = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if id == "0" && controllers.is_empty() {
            mounts.iter().find(|(_, fs, _)| *fs == "cgroup2")
        } else if controllers.split(',').any(|c| c == "pids") {
            mounts
                .iter()
                .find(|(_, fs, opts)| *fs == "cgroup" && opts.split(',').any(|o| o == "pids"))
        } else {
            None
        };
        if let Some((point, ..)) = mount {
            let dir = Path::new(point).join(path.trim_start_matches('/'));
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
