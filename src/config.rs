//! [`Config`]: everything one sandbox needs, validated before any fork.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::validate;

/// The timeout when neither the attribute nor `ISOTEST_TIMEOUT` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable naming the root filesystem when the attribute does not.
pub const ENV_ROOTFS: &str = "ISOTEST_ROOTFS";
/// Environment variable overriding the default timeout.
pub const ENV_TIMEOUT: &str = "ISOTEST_TIMEOUT";

/// Everything one sandbox needs. Built from `#[isolated(...)]` arguments or by
/// the `Sandbox` builder, and checked by [`Config::validate`] before any fork.
#[derive(Debug, Clone)]
pub struct Config {
    /// The root filesystem spec (`/abs/path`, `dir:PATH`, ...); `None` means
    /// `ISOTEST_ROOTFS`, else the default.
    pub rootfs: Option<String>,
    /// The hostname inside the sandbox.
    pub hostname: String,
    /// How long the sandbox may run before its whole pid namespace is killed.
    pub timeout: Duration,
    /// Skip the user namespace: the sandbox's root is the host's root. No isolation boundary.
    pub privileged: bool,
    /// Host paths bound into the sandbox.
    pub binds: Vec<Bind>,
    /// A host directory that holds the overlay's writable layer (`upper/`, with overlayfs'
    /// `work/` beside it) instead of the scratch tmpfs, so that what the sandbox wrote outlives
    /// it. Writes then reach the host disk. `None` (the default) keeps nothing.
    pub keep: Option<PathBuf>,
    /// Leave `/proc/sys` writable (`proc_sys = "rw"`). As root, the sandbox's root is the
    /// host's root to the kernel's sysctl checks, so host-wide knobs (`vm.*`, `kernel.*`)
    /// become writable too: like `privileged`, no isolation boundary for those.
    pub proc_sys_writable: bool,
    /// The size of each tmpfs of the sandbox: the scratch that holds the overlay's writable
    /// layer, `/tmp` and `/dev/shm` (tmpfs' `size=`: bytes with an optional `k`, `m` or `g`, or
    /// a percentage of RAM such as `"25%"`). `None` keeps the kernel's default, half the RAM.
    /// Filling it gives `ENOSPC` inside; nothing ever reaches the host disk.
    pub tmpfs_size: Option<String>,
    /// The most processes and threads the sandbox may have at once (a `pids` cgroup), so a
    /// fork bomb ends with `EAGAIN` inside. `None` sets no limit. Applied where a `pids`
    /// controller is writable (cgroup v2 with it delegated, or cgroup v1's `pids` hierarchy);
    /// elsewhere there is no limit.
    pub pids_max: Option<u64>,
}

/// The process limit when the attribute or builder does not set one.
pub const DEFAULT_PIDS_MAX: u64 = 4096;

/// One bind mount: a host path made visible at a path inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host path (absolute once parsed).
    pub source: PathBuf,
    /// The absolute path inside the sandbox.
    pub destination: String,
    /// Writes through the mount fail with `EROFS` (`:ro`, the default); with `:rw` they reach
    /// the host.
    pub readonly: bool,
}

impl Bind {
    /// Parses `SRC:DST[:ro|rw]`; a relative `SRC` is relative to `base` (the crate's
    /// `CARGO_MANIFEST_DIR` for `#[isolated(bind = [...])]`).
    pub fn parse(text: &str, base: &str) -> Result<Bind> {
        let invalid = |problem: String| Error::InvalidOption {
            option: "bind",
            value: text.into(),
            problem,
        };
        let (source, destination, readonly) = validate::bind(text).map_err(invalid)?;
        Ok(Bind {
            source: relative_to(base, source),
            destination: destination.into(),
            readonly,
        })
    }
}

impl Config {
    /// A configuration with defaults: hostname `isotest`, the default timeout (or
    /// `ISOTEST_TIMEOUT`), rootfs from `ISOTEST_ROOTFS`.
    pub fn new() -> Self {
        Config {
            rootfs: None,
            hostname: "isotest".into(),
            timeout: DEFAULT_TIMEOUT,
            privileged: false,
            binds: Vec::new(),
            keep: None,
            proc_sys_writable: false,
            tmpfs_size: None,
            pids_max: Some(DEFAULT_PIDS_MAX),
        }
    }

    /// Checks every value; the error names the option, the value and the fix.
    pub fn validate(&self) -> Result<()> {
        if let Some(rootfs) = &self.rootfs {
            if rootfs.trim().is_empty() || rootfs.contains('\0') {
                return Err(Error::InvalidOption {
                    option: "rootfs",
                    value: rootfs.clone(),
                    problem: "name a root filesystem, e.g. \"debian:bookworm\" or an absolute \
                              directory, or leave it unset to use ISOTEST_ROOTFS or the default"
                        .into(),
                });
            }
        }
        if let Some(size) = &self.tmpfs_size {
            validate::tmpfs_size(size).map_err(|problem| Error::InvalidOption {
                option: "tmpfs_size",
                value: size.clone(),
                problem,
            })?;
        }
        if self.pids_max == Some(0) {
            return Err(Error::InvalidOption {
                option: "pids_max",
                value: "0".into(),
                problem: "the sandbox needs at least one process; leave it unset for the \
                          default (4096)"
                    .into(),
            });
        }
        validate::hostname(&self.hostname).map_err(|problem| Error::InvalidOption {
            option: "hostname",
            value: self.hostname.clone(),
            problem,
        })?;
        if self.timeout.is_zero() {
            return Err(Error::InvalidOption {
                option: "timeout",
                value: format_duration(self.timeout),
                problem: "a timeout must be greater than zero".into(),
            });
        }
        for bind in &self.binds {
            let value = || {
                format!(
                    "{}:{}:{}",
                    bind.source.display(),
                    bind.destination,
                    if bind.readonly { "ro" } else { "rw" }
                )
            };
            if bind.source.as_os_str().is_empty()
                || bind.destination.contains('\0')
                || bind.destination.len() >= 4096
                || bind.source.as_os_str().as_encoded_bytes().contains(&0)
            {
                return Err(Error::InvalidOption {
                    option: "bind",
                    value: value(),
                    problem: "the source is empty, or a path holds a NUL byte or is longer \
                              than PATH_MAX"
                        .into(),
                });
            }
            if !bind.destination.starts_with('/') {
                return Err(Error::InvalidOption {
                    option: "bind",
                    value: value(),
                    problem: "the destination is relative; write an absolute path inside the \
                              sandbox, e.g. \"/data\""
                        .into(),
                });
            }
            if let Err(e) = std::fs::metadata(&bind.source) {
                return Err(Error::InvalidOption {
                    option: "bind",
                    value: value(),
                    problem: format!(
                        "the source {} cannot be used ({e}); a relative source is relative to \
                         the crate's CARGO_MANIFEST_DIR",
                        bind.source.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks what depends on the root filesystem `root`: every bind destination resolves
    /// inside it. Returns each destination resolved (symlinks followed within the root), the
    /// path the mount point is made at.
    pub fn resolve_binds(&self, root: &Path) -> Result<Vec<String>> {
        self.binds
            .iter()
            .map(|bind| {
                resolve_in_root(root, &bind.destination).map_err(|problem| Error::InvalidOption {
                    option: "bind",
                    value: format!("{}:{}", bind.source.display(), bind.destination),
                    problem,
                })
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    /// The rootfs spec in force: the configured one, else `ISOTEST_ROOTFS`, else the default
    /// ([`crate::rootfs::DEFAULT_SPEC`]); relative `tar:` and `dir:` paths are taken from `base`.
    pub fn rootfs_spec(&self, base: &Path) -> String {
        crate::rootfs::absolutize(
            &crate::rootfs::spec_or_default(self.rootfs.as_deref()),
            base,
        )
    }

    #[cfg(target_os = "linux")]
    /// Resolves the root filesystem (building or unpacking it on first use) and adds the
    /// read-only binds its spec needs (`host`). Returns the spec and the lower layer.
    pub fn resolve_rootfs(&mut self, base: &Path) -> Result<(String, PathBuf)> {
        let spec = self.rootfs_spec(base);
        let resolved = crate::rootfs::resolve_full(&spec)?;
        // Rootless, the sandbox's root is the caller: a tree owned by someone else appears as
        // nobody's inside, and nothing in it can be written or copied up.
        let (uid, _) = crate::sys::ids();
        if uid != 0 {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(&resolved.lower).map(|m| m.uid()).ok();
            if owner.is_some_and(|owner| owner != uid) {
                return Err(Error::Rootfs {
                    spec,
                    problem: format!(
                        "{} belongs to uid {}, not to you (uid {uid}); rootless sandboxes need a \
                         tree you own: build one with `isotest rootfs build debian:bookworm` \
                         (or ubuntu:jammy), unpack an archive with tar:PATH, or run as root",
                        resolved.lower.display(),
                        owner.unwrap_or_default()
                    ),
                });
            }
        }
        for dir in resolved.host_binds {
            self.binds.push(Bind {
                destination: dir.to_string_lossy().into_owned(),
                source: dir,
                readonly: true,
            });
        }
        Ok((spec, resolved.lower))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// The timeout from `ISOTEST_TIMEOUT`, if set.
pub(crate) fn env_timeout() -> Result<Option<Duration>> {
    match std::env::var(ENV_TIMEOUT) {
        Ok(v) if !v.is_empty() => {
            validate::duration(&v)
                .map(Some)
                .map_err(|problem| Error::InvalidOption {
                    option: "ISOTEST_TIMEOUT",
                    value: v,
                    problem,
                })
        }
        _ => Ok(None),
    }
}

/// Formats a duration the way the attribute accepts it: `250ms`, `30s`, `2m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Resolves a relative path against the crate that declared the test.
pub(crate) fn relative_to(base: &str, path: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::path::Path::new(base).join(p)
    }
}

/// Resolves the absolute `path` inside the directory `root` the way the kernel would after a
/// chroot into it: components are looked up with lstat, symlinks are followed (an absolute
/// target starts again at `root`), and what does not exist yet is kept as written. A symlink
/// whose `..` climbs above `root` points outside it and is refused, as is a loop.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> std::result::Result<String, String> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    let mut exists = true;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                if resolved.pop().is_none() {
                    return Err(format!("{path:?} climbs above the root filesystem"));
                }
                continue;
            }
            _ => {}
        }
        resolved.push(part);
        if !exists {
            continue;
        }
        let host = root.join(resolved.join("/"));
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(_) => {
                exists = false;
                continue;
            }
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(format!(
                "{path:?} goes through a symlink loop in the root filesystem"
            ));
        }
        let target = std::fs::read_link(&host).map_err(|e| format!("{}: {e}", host.display()))?;
        let target = target.to_string_lossy().into_owned();
        let link = format!("/{}", resolved.join("/"));
        resolved.pop();
        if target.starts_with('/') {
            resolved.clear();
        } else {
            // A relative target must stay inside the root.
            let mut depth = resolved.len();
            for c in target.split('/') {
                match c {
                    "" | "." => {}
                    ".." if depth == 0 => {
                        return Err(format!(
                            "{path:?} goes through the symlink {link} -> {target}, which points \
                             outside the root filesystem"
                        ))
                    }
                    ".." => depth -= 1,
                    _ => depth += 1,
                }
            }
        }
        pending.extend(
            target
                .split('/')
                .filter(|c| !c.is_empty())
                .rev()
                .map(str::to_string),
        );
    }
    Ok(format!("/{}", resolved.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binds() {
        let b = Bind::parse("fixtures/data:/data", "/crate").unwrap();
        assert_eq!(b.source, Path::new("/crate/fixtures/data"));
        assert_eq!(b.destination, "/data");
        assert!(b.readonly);
        let b = Bind::parse("/run/x.sock:/run/x.sock:rw", "/crate").unwrap();
        assert_eq!(b.source, Path::new("/run/x.sock"));
        assert!(!b.readonly);
        for bad in ["a:b", "a", "a:/b:rx", ":/b"] {
            let e = Bind::parse(bad, "/c").unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn missing_bind_source_is_named() {
        let mut c = Config::new();
        c.binds
            .push(Bind::parse("no/such/dir:/data", "/nonexistent-crate").unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("/nonexistent-crate/no/such/dir"), "{e}");
    }

    #[test]
    fn resolves_destinations_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::create_dir_all(r.join("run")).unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        std::os::unix::fs::symlink("/run", r.join("varrun")).unwrap();
        std::os::unix::fs::symlink("../../etc", r.join("run/out")).unwrap();
        std::os::unix::fs::symlink("/", r.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in_root(r, "/data").unwrap(), "/data");
        assert_eq!(resolve_in_root(r, "/lib/x/y").unwrap(), "/usr/lib/x/y");
        assert_eq!(resolve_in_root(r, "/varrun/x.sock").unwrap(), "/run/x.sock");
        assert!(resolve_in_root(r, "/up/../etc")
            .unwrap_err()
            .contains("climbs"));
        let e = resolve_in_root(r, "/run/out/passwd").unwrap_err();
        assert!(
            e.contains("/run/out -> ../../etc") && e.contains("outside"),
            "{e}"
        );
        assert!(resolve_in_root(r, "/loop/x").unwrap_err().contains("loop"));
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn rejects_empty_overlong_and_garbage_values_naming_them() {
        let check = |f: &dyn Fn(&mut Config), value: &str| {
            let mut c = Config::new();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(value), "{value:?}: {e}");
        };
        check(&|c| c.hostname = String::new(), "hostname \"\"");
        check(&|c| c.hostname = "a".repeat(65), &"a".repeat(65));
        check(&|c| c.hostname = "a\0b".into(), "hostname");
        check(&|c| c.rootfs = Some(String::new()), "rootfs \"\"");
        check(&|c| c.rootfs = Some("  ".into()), "rootfs \"  \"");
        check(&|c| c.timeout = Duration::ZERO, "timeout \"0s\"");
        check(&|c| c.tmpfs_size = Some(String::new()), "tmpfs_size \"\"");
        check(&|c| c.tmpfs_size = Some("lots".into()), "\"lots\"");
        check(&|c| c.tmpfs_size = Some("9".repeat(40)), &"9".repeat(40));
        check(&|c| c.pids_max = Some(0), "pids_max \"0\"");
        check(
            &|c| {
                c.binds.push(Bind {
                    source: "/".into(),
                    destination: "data".into(),
                    readonly: true,
                })
            },
            "/:data:ro",
        );
        check(
            &|c| {
                c.binds.push(Bind {
                    source: "".into(),
                    destination: "/data".into(),
                    readonly: true,
                })
            },
            ":/data:ro",
        );
        assert!(Config::new().validate().is_ok());
    }

    #[test]
    fn bind_parse_rejects_empty_and_garbage() {
        for bad in [
            "",
            ":",
            "::",
            "a:",
            "a:b:c:d",
            "x:/y:yes",
            &format!("x:{}", "y".repeat(5000)),
        ] {
            let e = Bind::parse(bad, "/c").unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rejects_bad_hostname_naming_the_value() {
        let mut c = Config::new();
        c.hostname = "bad_name".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("bad_name") && e.contains("hostname"), "{e}");
    }
}
