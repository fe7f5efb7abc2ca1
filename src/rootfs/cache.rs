//! The cache of built and unpacked root filesystems.
//!
//! Location: `ISOTEST_CACHE`, else `$XDG_CACHE_HOME/isotest`, else `~/.cache/isotest`. Below
//! it, `rootfs/` holds one entry per key:
//!
//! ```text
//! rootfs/<key>/rootfs      the lower layer
//! rootfs/<key>/info        the spec and the inputs the key was derived from, the size
//! rootfs/<key>/complete    the completion marker: an entry without it is invalid
//! rootfs/<key>/used        its mtime is the last time a process resolved the entry
//! rootfs/<key>.lock        flock(2)ed exclusively while the entry is built, checked or removed
//! rootfs/<key>.tmp-<pid>   an entry being built, renamed to <key> when complete
//! archive-hashes/          memoised content hashes of tar: archives
//! ```
//!
//! The key is a hash of the spec's inputs ([`Inputs`]): for a distribution, the suite, mirror,
//! variant, extra packages and builder; for an archive, its content hash. A process that finds no
//! complete entry takes the lock, looks again (another process may have built it meanwhile),
//! removes leftovers of killed builds, builds into `<key>.tmp-<pid>`, writes the marker and
//! renames the directory into place. Lock files are never removed: removing one while another
//! process waits on it would let two builders in.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::{archive, build, host, note, Resolved, Spec};
use crate::error::{Errno, Error, Result};

/// Environment variable naming the cache directory.
pub const ENV_CACHE: &str = "ISOTEST_CACHE";

const MARKER: &str = "complete";
const INFO: &str = "info";
const USED: &str = "used";
const LOWER: &str = "rootfs";

/// What a cache entry is derived from; its [`key`](Inputs::key) names the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// A readable prefix of the key, e.g. `debian-bookworm`.
    pub label: String,
    /// Every input, in a fixed order: `("suite", "bookworm")`, `("mirror", ...)`.
    pub pairs: Vec<(&'static str, String)>,
}

impl Inputs {
    /// `<label>-<16 hex digits of SHA-256 over the inputs>`.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"isotest rootfs cache v1\n");
        for (k, v) in &self.pairs {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        let digest = h.finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let label: String = self
            .label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        format!("{label}-{hex}")
    }
}

/// One entry of the cache, as [`Cache::list`] reports it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's key (its directory name).
    pub key: String,
    /// The spec that built it (empty when the entry has no info file).
    pub spec: String,
    /// The lower layer.
    pub lower: PathBuf,
    /// Apparent size of the tree in bytes, measured after the build.
    pub size: u64,
    /// When it was built.
    pub created: SystemTime,
    /// When a process last resolved it.
    pub last_used: SystemTime,
    /// Whether it has its completion marker; an incomplete entry is never used.
    pub complete: bool,
}

/// What [`Cache::prune`] removes.
#[derive(Debug, Clone)]
pub struct Prune {
    /// Remove every entry.
    pub all: bool,
    /// Remove entries not resolved for this long (incomplete entries and leftovers of killed
    /// builds are always removed).
    pub unused_for: Duration,
    /// Only report what would be removed.
    pub dry_run: bool,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at `ISOTEST_CACHE`, else `$XDG_CACHE_HOME/isotest`, else `~/.cache/isotest`.
    pub fn from_env() -> Result<Cache> {
        let var = |name| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let root = var(ENV_CACHE)
            .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("isotest")))
            .or_else(|| var("HOME").map(|p| p.join(".cache/isotest")))
            .ok_or_else(|| Error::Unsupported {
                what: "no cache directory: none of ISOTEST_CACHE, XDG_CACHE_HOME and HOME is set \
                       to an absolute path"
                    .into(),
                fix: "set ISOTEST_CACHE to a directory for built root filesystems".into(),
            })?;
        Ok(Cache { root })
    }

    /// The cache at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entries(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    /// Resolves a parsed spec through the cache, building the entry if it has none (or if
    /// `rebuild`). `text` is the spec as written, for messages.
    pub fn resolve(&self, text: &str, spec: &Spec, rebuild: bool) -> Result<Resolved> {
        match spec {
            Spec::Release(release) => {
                let plan = build::Plan::discover(text, release)?;
                let lower =
                    self.ensure(text, &plan.inputs(), rebuild, |dest| plan.run(text, dest))?;
                Ok(Resolved {
                    lower,
                    host_binds: Vec::new(),
                })
            }
            Spec::Tar(path) => {
                let hash = archive::content_hash(&self.root.join("archive-hashes"), text, path)?;
                let inputs = archive::inputs(path, &hash);
                let lower = self.ensure(text, &inputs, rebuild, |dest| {
                    archive::unpack(text, path, dest).map(drop)
                })?;
                Ok(Resolved {
                    lower,
                    host_binds: Vec::new(),
                })
            }
            Spec::Host => {
                let skeleton = host::Skeleton::of_host();
                let lower = self.ensure(text, &skeleton.inputs(), rebuild, |dest| {
                    skeleton.create(dest)
                })?;
                Ok(Resolved {
                    lower,
                    host_binds: skeleton.binds(),
                })
            }
            Spec::Dir(path) => Ok(Resolved {
                lower: super::check_dir(text, path)?,
                host_binds: Vec::new(),
            }),
        }
    }

    /// Returns the lower layer of the entry for `inputs`, building it with `build` (which must
    /// create the directory it is given) when there is no complete entry.
    fn ensure(
        &self,
        text: &str,
        inputs: &Inputs,
        rebuild: bool,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let dir = self.entries();
        let key = inputs.key();
        let entry = dir.join(&key);
        if !rebuild && is_complete(&entry) {
            touch_used(&entry);
            return Ok(entry.join(LOWER));
        }
        fs::create_dir_all(&dir).map_err(io("creating the cache directory", &dir))?;
        let _lock = lock(&dir.join(format!("{key}.lock")), Some(text))?;
        if !rebuild && is_complete(&entry) {
            touch_used(&entry);
            return Ok(entry.join(LOWER));
        }
        for leftover in leftovers(&dir, &key)? {
            note(&format!(
                "removing {} left by an interrupted build",
                leftover.display()
            ));
            remove_tree(&leftover)?;
        }
        if fs::symlink_metadata(&entry).is_ok() {
            if !rebuild {
                note(&format!(
                    "removing incomplete cache entry {}",
                    entry.display()
                ));
            }
            remove_tree(&entry)?;
        }

        let tmp = dir.join(format!("{key}.tmp-{}", std::process::id()));
        fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
        note(&format!("building {text} into {}", tmp.display()));
        let start = Instant::now();
        if let Err(e) = build(&tmp.join(LOWER)) {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
        let size = tree_size(&tmp.join(LOWER));
        let mut info = format!(
            "spec={text}\nkey={key}\ncreated={}\nsize={size}\n",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        );
        for (k, v) in &inputs.pairs {
            info.push_str(&format!("input.{k}={v}\n"));
        }
        write_synced(&tmp.join(INFO), info.as_bytes())?;
        write_synced(&tmp.join(MARKER), b"")?;
        fs::rename(&tmp, &entry).map_err(io("renaming into place", &tmp))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        touch_used(&entry);
        note(&format!(
            "built {text} in {:.1}s ({} MB): {}",
            start.elapsed().as_secs_f64(),
            size / 1_000_000,
            entry.join(LOWER).display()
        ));
        Ok(entry.join(LOWER))
    }

    /// Every entry, complete or not, sorted by spec. Leftovers of killed builds are not listed.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let dir = self.entries();
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("reading the cache directory", &dir)(e)),
        };
        let mut out = Vec::new();
        for item in read {
            let item = item.map_err(io("reading the cache directory", &dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp-") || name.ends_with(".lock") {
                continue;
            }
            if !item.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            out.push(read_entry(&item.path(), name));
        }
        out.sort_by(|a, b| a.spec.cmp(&b.spec).then(a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Removes what `opts` selects, each under its entry's lock; entries another process is
    /// building are skipped. Returns what was (or, with `dry_run`, would be) removed. A removed
    /// entry must not be in use as a lower layer by a running sandbox.
    pub fn prune(&self, opts: &Prune) -> Result<Vec<Entry>> {
        let dir = self.entries();
        let mut removed = Vec::new();
        let now = SystemTime::now();
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(io("reading the cache directory", &dir)(e)),
        };
        let mut names: Vec<String> = read
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let key = name.split(".tmp-").next().unwrap_or(&name).to_string();
            let Some(_lock) = try_lock(&dir.join(format!("{key}.lock")))? else {
                note(&format!("skipping {name}: another process holds its lock"));
                continue;
            };
            let entry = read_entry(&path, key);
            let unused = now
                .duration_since(entry.last_used)
                .is_ok_and(|d| d >= opts.unused_for);
            let leftover = name.contains(".tmp-");
            if opts.all || leftover || !entry.complete || unused {
                if !opts.dry_run {
                    remove_tree(&path)?;
                }
                removed.push(entry);
            }
        }
        if opts.all && !opts.dry_run {
            let hashes = self.root.join("archive-hashes");
            if hashes.exists() {
                remove_tree(&hashes)?;
            }
        }
        Ok(removed)
    }
}

/// Every entry of the cache named by the environment; see [`Cache::list`].
pub fn list() -> Result<Vec<Entry>> {
    Cache::from_env()?.list()
}

/// Prunes the cache named by the environment; see [`Cache::prune`].
pub fn prune(opts: &Prune) -> Result<Vec<Entry>> {
    Cache::from_env()?.prune(opts)
}

/// Whether the entry directory holds its completion marker.
pub fn is_complete(entry: &Path) -> bool {
    entry.join(MARKER).is_file()
}

fn read_entry(path: &Path, key: String) -> Entry {
    let info = fs::read_to_string(path.join(INFO)).unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_default()
            .to_string()
    };
    let mtime = |p: PathBuf| {
        fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH)
    };
    let created = field("created")
        .parse()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .unwrap_or_else(|_| mtime(path.to_path_buf()));
    let last_used = match mtime(path.join(USED)) {
        UNIX_EPOCH => created,
        t => t,
    };
    Entry {
        key,
        spec: field("spec"),
        lower: path.join(LOWER),
        size: field("size").parse().unwrap_or(0),
        created,
        last_used,
        complete: is_complete(path),
    }
}

fn leftovers(dir: &Path, key: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{key}.tmp-");
    let read = fs::read_dir(dir).map_err(io("reading the cache directory", dir))?;
    Ok(read
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect())
}

fn touch_used(entry: &Path) {
    // A read-only cache (prepared by another user) is fine: the entry is just not marked used.
    if let Ok(f) = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(entry.join(USED))
    {
        let _ = f.set_modified(SystemTime::now());
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io("creating", path))?;
    f.write_all(data).map_err(io("writing", path))?;
    f.sync_all().map_err(io("syncing", path))
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("opening the lock file", path))
}

/// Takes the exclusive lock at `path`, saying on stderr when it has to wait for another process.
fn lock(path: &Path, waiting_for: Option<&str>) -> Result<Flock<File>> {
    let mut file = open_lock(path)?;
    let mut arg = FlockArg::LockExclusiveNonblock;
    loop {
        match Flock::lock(file, arg) {
            Ok(locked) => return Ok(locked),
            Err((f, nix::errno::Errno::EINTR)) => file = f,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if arg == FlockArg::LockExclusiveNonblock => {
                if let Some(spec) = waiting_for {
                    note(&format!("waiting for another process building {spec}"));
                }
                file = f;
                arg = FlockArg::LockExclusive;
            }
            Err((_, errno)) => {
                return Err(Error::Sys {
                    call: format!("flock({:?}, LOCK_EX)", path.display().to_string()),
                    errno: Errno(errno as i32),
                })
            }
        }
    }
}

/// The exclusive lock at `path` if no other process holds it.
fn try_lock(path: &Path) -> Result<Option<Flock<File>>> {
    match Flock::lock(open_lock(path)?, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(Error::Sys {
            call: format!("flock({:?}, LOCK_EX|LOCK_NB)", path.display().to_string()),
            errno: Errno(errno as i32),
        }),
    }
}

/// Removes a tree, first making its directories writable when that is what stops removal
/// (an unprivileged unpack keeps read-only directories such as `proc` 0555).
/// Refuses to descend into a tree that still has file systems mounted below it (a builder killed
/// with its target's /proc or /dev mounted): removing those would remove the host's files.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let mounts = mounts_under(path);
    if !mounts.is_empty() {
        let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
        return Err(Error::Unsupported {
            what: format!(
                "cannot remove {}: file systems are still mounted below it ({})",
                path.display(),
                list.join(", ")
            ),
            fix: format!("run `umount -R {}` and retry", path.display()),
        });
    }
    let remove = |p: &Path| match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    match remove(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_writable(path);
            remove(path).map_err(io("removing", path))
        }
        other => other.map_err(io("removing", path)),
    }
}

/// Mount points strictly below `path`, from /proc/self/mountinfo.
fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let Ok(mounts) = crate::fixtures::Mounts::read() else {
        return Vec::new();
    };
    let base = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mounts
        .iter()
        .map(|m| PathBuf::from(&m.mount_point))
        .filter(|m| m != &base && m.starts_with(&base))
        .collect()
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = fs::symlink_metadata(path) else {
        return;
    };
    if !m.is_dir() {
        return;
    }
    let mode = m.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    for e in fs::read_dir(path).into_iter().flatten().flatten() {
        make_writable(&e.path());
    }
}

/// Apparent size of the files below `path`, not following symlinks.
pub(crate) fn tree_size(path: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| tree_size(&e.path()))
        .sum()
}

/// An `Error::Io` maker for `map_err`.
pub(crate) fn io<'a>(
    context: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            label: "debian-bookworm".into(),
            pairs: vec![
                ("kind", "release".into()),
                ("suite", "bookworm".into()),
                ("mirror", "http://m.example/debian".into()),
                ("packages", "".into()),
            ],
        }
    }

    #[test]
    fn keys_are_stable_and_readable() {
        let k = inputs().key();
        assert_eq!(k, inputs().key());
        assert!(
            k.starts_with("debian-bookworm-") && k.len() == 16 + 16,
            "{k}"
        );
    }

    #[test]
    fn any_changed_input_changes_the_key() {
        let base = inputs().key();
        for i in 0..inputs().pairs.len() {
            let mut changed = inputs();
            changed.pairs[i].1.push('x');
            assert_ne!(changed.key(), base, "input {} ignored", changed.pairs[i].0);
        }
        let mut label = inputs();
        label.label = "other".into();
        assert_ne!(label.key(), base);
    }

    #[test]
    fn finds_the_mounts_below_a_path() {
        // (Unescaping mountinfo fields is tested with the parser, in fixtures.)
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/proc")));
        assert!(!mounts_under(Path::new("/proc")).contains(&PathBuf::from("/proc")));
    }

    #[test]
    fn labels_are_sanitised() {
        let i = Inputs {
            label: "tar-my archive/..".into(),
            pairs: vec![],
        };
        assert!(i.key().starts_with("tar-my-archive-..-"), "{}", i.key());
    }

    #[test]
    fn ensure_builds_once_and_rebuilds_without_marker() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let mut builds = 0;
        let mut build = |d: &Path| {
            builds += 1;
            fs::create_dir(d).map_err(io("mkdir", d))?;
            fs::write(d.join("f"), "x").map_err(io("write", d))
        };
        let a = cache.ensure("t", &inputs(), false, &mut build).unwrap();
        let b = cache.ensure("t", &inputs(), false, &mut build).unwrap();
        assert_eq!(a, b);
        fs::remove_file(a.parent().unwrap().join(MARKER)).unwrap();
        fs::create_dir(cache.entries().join(format!("{}.tmp-1", inputs().key()))).unwrap();
        let c = cache.ensure("t", &inputs(), false, &mut build).unwrap();
        assert_eq!(a, c);
        assert_eq!(builds, 2);
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].spec.as_str(), listed[0].size), ("t", 1));
        assert!(leftovers(&cache.entries(), &inputs().key())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn failed_builds_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let e = cache.ensure("t", &inputs(), false, |d| {
            fs::create_dir(d).unwrap();
            Err(Error::Setup("boom".into()))
        });
        assert!(e.is_err());
        assert!(cache.list().unwrap().is_empty());
        assert!(leftovers(&cache.entries(), &inputs().key())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn prune_keeps_recent_entries_unless_all() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        cache
            .ensure("t", &inputs(), false, |d| {
                fs::create_dir(d).map_err(io("mkdir", d))
            })
            .unwrap();
        let keep = Prune {
            all: false,
            unused_for: Duration::from_secs(3600),
            dry_run: false,
        };
        assert!(cache.prune(&keep).unwrap().is_empty());
        let all = Prune { all: true, ..keep };
        assert_eq!(cache.prune(&all).unwrap().len(), 1);
        assert!(cache.list().unwrap().is_empty());
    }
}
