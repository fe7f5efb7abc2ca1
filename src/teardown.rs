//! Leak checks. Inside the sandbox, after the body: processes still alive, mounts added and
//! not removed, writes outside the declared `writes`. Outside, after the child is gone: the
//! host's mount table, scratch directories and the lower layer.
//!
//! The writes check (and the [`changes`](crate::fixtures::changes) fixture) reads the
//! overlay's upper layer: a whiteout (a character device 0:0) is a deletion, a directory with
//! the `overlay.opaque` xattr hides what the lower layer has below it, and anything else in the
//! upper layer was created (not in the lower layer) or modified (in the lower layer too). Both
//! layers are unreachable by path once the old root is detached, so [`Layers::open`] holds
//! them by fd before the pivot and they are read through `/proc/self/fd/N`.

use std::collections::{BTreeSet, HashSet};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::fixtures::{Change, ChangeKind, Mount, Mounts};
use crate::{plan, sys};

/// The overlay's layers, held open across the pivot.
#[derive(Debug)]
pub(crate) struct Layers {
    upper: OwnedFd,
    lower: OwnedFd,
}

impl Layers {
    /// Opens the upper and lower layers; call before the old root is detached.
    pub(crate) fn open() -> Result<Layers> {
        Ok(Layers {
            upper: sys::open_path(Path::new(plan::UPPER), libc::O_DIRECTORY)?,
            lower: sys::open_path(Path::new(plan::LOWER), libc::O_DIRECTORY)?,
        })
    }
}

/// What the sandboxed test recorded before the body ran.
#[derive(Debug)]
struct Inside {
    layers: Layers,
    /// Paths in the upper layer before the body: the harness's own (mount points it made).
    baseline: HashSet<PathBuf>,
    /// The mount table before the body, as the kernel wrote it.
    mounts: String,
}

static INSIDE: OnceLock<Inside> = OnceLock::new();

/// Whether this process is a sandboxed test that recorded its baseline.
pub(crate) fn inside() -> bool {
    INSIDE.get().is_some()
}

/// Records the state the checks compare against; call after the pivot, before the body.
pub(crate) fn record(layers: Layers) -> Result<()> {
    let baseline = scan(&layers)?.into_iter().map(|c| c.path).collect();
    let mounts = read_mount_table()?;
    let _ = INSIDE.set(Inside {
        layers,
        baseline,
        mounts,
    });
    Ok(())
}

/// The test's changes so far, without the harness's own.
pub(crate) fn changes() -> Result<Vec<Change>> {
    let inside = INSIDE.get().ok_or_else(|| {
        Error::Child("not inside an #[isolated] test, or before its body started".into())
    })?;
    let mut all = scan(&inside.layers)?;
    all.retain(|c| !inside.baseline.contains(&c.path));
    Ok(all)
}

fn read_mount_table() -> Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| Error::Io {
        context: "teardown: reading",
        path: "/proc/self/mountinfo".into(),
        source,
    })
}

/// What the inside checks look at, from the attribute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checks<'a> {
    pub processes: bool,
    pub mounts: bool,
    pub writes: Option<&'a [&'a str]>,
}

/// Runs the inside checks after the body; each finding is one line naming what leaked.
pub(crate) fn check(checks: Checks<'_>) -> Vec<String> {
    let mut findings = Vec::new();
    if checks.processes {
        for (pid, cmdline) in leaked_processes() {
            findings.push(format!("leaked process {pid} ({cmdline})"));
        }
    }
    let inside = INSIDE.get();
    if checks.mounts {
        match (inside, read_mount_table()) {
            // The same table, byte for byte: nothing to look at.
            (Some(inside), Ok(now)) if now == inside.mounts => {}
            (Some(inside), Ok(now)) => {
                let before: HashSet<u64> =
                    Mounts::parse(&inside.mounts).iter().map(|m| m.id).collect();
                for m in Mounts::parse(&now)
                    .iter()
                    .filter(|m| !before.contains(&m.id))
                {
                    findings.push(format!(
                        "leaked mount {} ({} from {})",
                        m.mount_point, m.fs_type, m.source
                    ));
                }
            }
            (_, Err(e)) => findings.push(format!("could not check mounts: {e}")),
            (None, _) => {}
        }
    }
    if let Some(writes) = checks.writes {
        match changes() {
            Ok(all) => {
                for change in all.iter().filter(|c| !allowed(c, writes)) {
                    findings.push(format!("{change} (outside writes = {writes:?})"));
                }
            }
            Err(e) => findings.push(format!("could not check writes: {e}")),
        }
    }
    findings
}

/// What the failure message says after the findings, for each kind found.
pub(crate) fn hints(findings: &[String], writes: bool) -> Vec<&'static str> {
    let mut hints = Vec::new();
    if findings.iter().any(|f| f.starts_with("leaked process")) {
        hints.push(
            "wait for the processes the test starts, or opt out with allow_leaks = [\"processes\"]",
        );
    }
    if findings.iter().any(|f| f.starts_with("leaked mount")) {
        hints.push("unmount what the test mounts, or opt out with allow_leaks = [\"mounts\"]");
    }
    if writes && findings.iter().any(|f| f.contains("(outside writes")) {
        hints.push("add the paths the test may change to writes = [...]");
    }
    hints
}

/// A change is allowed when it is at or below a declared path, or is a directory created on
/// the way to one (`mkdir -p`).
fn allowed(change: &Change, writes: &[&str]) -> bool {
    writes.iter().any(|w| {
        let w = Path::new(w);
        change.path.starts_with(w)
            || (change.kind == ChangeKind::Created && w.starts_with(&change.path))
    })
}

/// Processes other than PID 1 still alive (zombies are dead and do not count), with their
/// command lines. A process killed just before the body returned gets a moment to die.
fn leaked_processes() -> Vec<(u32, String)> {
    let mut alive = Vec::new();
    for attempt in 0..10 {
        alive = live_processes();
        if alive.is_empty() {
            break;
        }
        if attempt < 9 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    alive
        .into_iter()
        .map(|pid| (pid, command_line(pid)))
        .collect()
}

fn live_processes() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != 1 && pid != me)
        .filter(|pid| {
            // The state is the first field after the command name in parentheses.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn command_line(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        format!("[{}]", comm.trim_end())
    } else {
        words.join(" ")
    }
}

const OPAQUE: [&CStr; 2] = [c"user.overlay.opaque", c"trusted.overlay.opaque"];

/// Reads every change the upper layer holds, sorted by path.
fn scan(layers: &Layers) -> Result<Vec<Change>> {
    let upper = PathBuf::from(format!("/proc/self/fd/{}", layers.upper.as_raw_fd()));
    let lower = PathBuf::from(format!("/proc/self/fd/{}", layers.lower.as_raw_fd()));
    let mut out = Vec::new();
    walk(&upper, &lower, Path::new(""), true, &mut out)?;
    out.sort();
    Ok(out)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        context: "teardown: reading the overlay layer",
        path: path.to_path_buf(),
        source,
    }
}

/// Walks the upper directory `rel`; `lower_dir` says the lower layer has `rel` as a directory
/// reached through directories only (so looking a child up there follows no symlink).
fn walk(
    upper: &Path,
    lower: &Path,
    rel: &Path,
    lower_dir: bool,
    out: &mut Vec<Change>,
) -> Result<()> {
    let dir = upper.join(rel);
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name();
        let child = rel.join(&name);
        names.insert(name);
        let path = Path::new("/").join(&child);
        let meta = entry.metadata().map_err(io(&dir))?;
        let below = if lower_dir {
            std::fs::symlink_metadata(lower.join(&child)).ok()
        } else {
            None
        };
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            out.push(Change {
                path,
                kind: ChangeKind::Deleted,
            });
            continue;
        }
        if !ft.is_dir() {
            let kind = match below {
                Some(_) => ChangeKind::Modified,
                None => ChangeKind::Created,
            };
            out.push(Change { path, kind });
            continue;
        }
        let below_dir = below.as_ref().is_some_and(|b| b.file_type().is_dir());
        match &below {
            None => out.push(Change {
                path: path.clone(),
                kind: ChangeKind::Created,
            }),
            Some(b) if !b.file_type().is_dir() => out.push(Change {
                path: path.clone(),
                kind: ChangeKind::Modified,
            }),
            // Copied up: a change only if its own metadata differs.
            Some(b) => {
                let mode = |m: &std::fs::Metadata| (m.mode(), m.uid(), m.gid());
                if mode(b) != mode(&meta) {
                    out.push(Change {
                        path: path.clone(),
                        kind: ChangeKind::Modified,
                    });
                }
            }
        }
        let upper_child = upper.join(&child);
        let mut opaque = false;
        for name in OPAQUE {
            if sys::lgetxattr(&upper_child, name)?.is_some_and(|v| v == b"y") {
                opaque = true;
            }
        }
        if opaque && below_dir {
            // Removed and made again: what the lower layer has and the upper lacks is gone.
            let lower_child = lower.join(&child);
            let upper_names: HashSet<_> = std::fs::read_dir(&upper_child)
                .map_err(io(&upper_child))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            for e in std::fs::read_dir(&lower_child).map_err(io(&lower_child))? {
                let e = e.map_err(io(&lower_child))?;
                if !upper_names.contains(&e.file_name()) {
                    out.push(Change {
                        path: path.join(e.file_name()),
                        kind: ChangeKind::Deleted,
                    });
                }
            }
        }
        walk(upper, lower, &child, below_dir, out)?;
    }
    Ok(())
}

/// The host's view before the sandbox started, to check it after the child is gone.
#[derive(Debug)]
pub(crate) struct Host {
    lower: PathBuf,
    mounts: String,
    scratch: Vec<(PathBuf, bool)>,
    sample: std::sync::Arc<Sample>,
}

/// mtime and ctime of some paths of a lower layer.
type Sample = Vec<(PathBuf, i64, i64, i64, i64)>;

/// The sandbox's scratch paths, as they would appear on the host if a mount were missed.
const SCRATCH: [&str; 4] = [plan::UPPER, plan::WORK, plan::NEW_ROOT, plan::LOWER];

impl Host {
    /// Records the host's mount table, the scratch paths and a sample of the lower layer.
    pub(crate) fn before(lower: &Path) -> Host {
        Host {
            lower: lower.to_path_buf(),
            mounts: std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            scratch: SCRATCH
                .iter()
                .map(|p| (PathBuf::from(p), Path::new(p).exists()))
                .collect(),
            sample: first_sample(lower),
        }
    }

    /// Compares the host with what [`Host::before`] recorded. A finding is a bug of the
    /// harness, never of the test.
    pub(crate) fn check(&self) -> Vec<String> {
        let mut findings = Vec::new();
        let now = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        // Unchanged byte for byte (the usual case): nothing to look at. Otherwise other
        // processes may have mounted things too: only the sandbox's count.
        if now != self.mounts {
            let before: HashSet<u64> = Mounts::parse(&self.mounts).iter().map(|m| m.id).collect();
            for m in Mounts::parse(&now)
                .iter()
                .filter(|m| !before.contains(&m.id))
            {
                if belongs_to_sandbox(m, &self.lower) {
                    findings.push(format!(
                        "the host's mount table holds {} ({} from {}) from the sandbox",
                        m.mount_point, m.fs_type, m.source
                    ));
                }
            }
        }
        for (path, existed) in &self.scratch {
            if !existed && path.exists() {
                findings.push(format!(
                    "scratch directory {} remains on the host",
                    path.display()
                ));
            }
        }
        let now = sample(&self.lower);
        if now != *self.sample {
            let changed: Vec<String> = now
                .iter()
                .filter(|s| !self.sample.contains(s))
                .chain(self.sample.iter().filter(|s| !now.contains(s)))
                .map(|s| s.0.display().to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            findings.push(format!(
                "the lower layer {} changed: {}",
                self.lower.display(),
                changed.join(", ")
            ));
        }
        findings
            .into_iter()
            .map(|f| {
                format!(
                    "isotest bug: {f}; the sandbox must never change the host, please report this"
                )
            })
            .collect()
    }
}

/// A mount on the host that only a sandbox makes.
fn belongs_to_sandbox(m: &Mount, lower: &Path) -> bool {
    let lower = lower.to_string_lossy();
    m.source == "isotest"
        || Path::new(&m.mount_point).starts_with(&*lower)
        || SCRATCH
            .iter()
            .any(|s| Path::new(&m.mount_point).starts_with(s))
        || (m.fs_type == "overlay"
            && m.super_options
                .iter()
                .any(|o| o == &format!("upperdir={}", plan::UPPER)))
}

/// The sample of `lower` as the first sandbox of this process found it: the lower layer never
/// changes, so later sandboxes compare against the same one and do not take it again.
fn first_sample(lower: &Path) -> std::sync::Arc<Sample> {
    static FIRST: std::sync::Mutex<Vec<(PathBuf, std::sync::Arc<Sample>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = first.iter().find(|(p, _)| p == lower) {
        return s.clone();
    }
    let s = std::sync::Arc::new(sample(lower));
    first.push((lower.to_path_buf(), s.clone()));
    s
}

/// mtime and ctime of the lower root and of its entries: a write into any top-level directory
/// (`/etc`, `/usr`, ...) that adds, removes or renames an entry changes its times.
fn sample(lower: &Path) -> Sample {
    let stat = |p: &Path| {
        std::fs::symlink_metadata(p).ok().map(|m| {
            (
                p.to_path_buf(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        })
    };
    let mut out: Vec<_> = stat(lower).into_iter().collect();
    if let Ok(entries) = std::fs::read_dir(lower) {
        out.extend(entries.filter_map(|e| stat(&e.ok()?.path())));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, kind: ChangeKind) -> Change {
        Change {
            path: path.into(),
            kind,
        }
    }

    #[test]
    fn writes_allow_below_and_parents_made_on_the_way() {
        let w = ["/etc/myapp", "/var/lib/myapp"];
        assert!(allowed(&change("/etc/myapp", ChangeKind::Modified), &w));
        assert!(allowed(
            &change("/etc/myapp/a.conf", ChangeKind::Created),
            &w
        ));
        assert!(allowed(&change("/var/lib", ChangeKind::Created), &w));
        assert!(!allowed(&change("/var/lib", ChangeKind::Deleted), &w));
        assert!(!allowed(
            &change("/etc/myapp.conf", ChangeKind::Created),
            &w
        ));
        assert!(!allowed(&change("/etc/passwd", ChangeKind::Modified), &w));
    }

    #[test]
    fn host_mounts_of_a_sandbox_are_recognised() {
        let lower = Path::new("/srv/rootfs");
        let m = |line: &str| Mount::parse(line).unwrap();
        assert!(belongs_to_sandbox(
            &m("90 1 0:50 / /tmp rw - tmpfs isotest rw"),
            lower
        ));
        assert!(belongs_to_sandbox(
            &m("91 1 0:51 / /mnt/x rw - overlay overlay rw,lowerdir=/a,upperdir=/tmp/upper,workdir=/tmp/work"),
            lower
        ));
        assert!(belongs_to_sandbox(
            &m("92 1 0:52 / /srv/rootfs/proc rw - proc proc rw"),
            lower
        ));
        assert!(!belongs_to_sandbox(
            &m("93 1 0:53 / /media/usb rw - vfat /dev/sdb1 rw"),
            lower
        ));
    }

    #[test]
    fn lower_sample_sees_a_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root").unwrap();
        let host = Host::before(dir.path());
        assert!(host.check().is_empty());
        std::thread::sleep(std::time::Duration::from_millis(20));
        // A file added to a top-level directory changes that directory's times.
        std::fs::write(dir.path().join("etc/shadow"), "root:x").unwrap();
        let findings = host.check();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].starts_with("isotest bug: the lower layer")
                && findings[0]
                    .ends_with("etc; the sandbox must never change the host, please report this"),
            "{findings:?}"
        );
    }
}
