//! Where root filesystems come from. A spec names the lower layer of a sandbox's overlay.
//!
//! | spec | meaning |
//! | --- | --- |
//! | `ubuntu:jammy` (the default), `ubuntu:noble`, `ubuntu:focal`, `ubuntu:22.04`, `ubuntu:24.04`, `ubuntu:20.04` | built once with mmdebstrap (or debootstrap) from an Ubuntu mirror |
//! | `debian:bookworm`, `debian:trixie`, `debian:bullseye`, `debian:12`, `debian:13`, `debian:11` | the same builder, Debian mirror |
//! | `tar:PATH` | an archive (`.tar`, `.tar.gz`/`.tgz`, `.tar.zst`, `.tar.xz`), unpacked once |
//! | `dir:PATH` or an absolute path | an existing tree, used read-only as the lower layer |
//! | `host` | the host's own /usr, /bin, /lib*, /sbin and /etc, read-only |
//!
//! A distribution spec may name extra packages after a `+`: `debian:bookworm+iproute2,curl`.
//!
//! Built and unpacked roots live in a cache (see [`cache`]) keyed by the spec and its inputs.
//! The lower layer is never written: every sandbox puts its own upper layer on top.
//!
//! Environment variables:
//!
//! - `ISOTEST_ROOTFS`: the spec when none is configured (else [`DEFAULT_SPEC`]).
//! - `ISOTEST_CACHE`: the cache directory (else `$XDG_CACHE_HOME/isotest`, else
//!   `~/.cache/isotest`).
//! - `ISOTEST_MIRROR`: the mirror for `ubuntu:` and `debian:` builds (else the host's apt
//!   sources).
//! - `ISOTEST_BUILD_TIMEOUT`: how long a build may run (`20m` by default), e.g. `45m`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use once_cell::sync::Lazy;

use crate::error::{Error, Result};

pub mod archive;
pub mod build;
pub mod cache;
pub mod host;
pub mod mirror;

/// The spec used when neither the test nor `ISOTEST_ROOTFS` names one.
pub const DEFAULT_SPEC: &str = "ubuntu:jammy";

/// Environment variable naming the spec when none is configured.
pub const ENV_ROOTFS: &str = crate::config::ENV_ROOTFS;

/// The forms [`Spec::parse`] accepts, for error messages.
pub const ACCEPTED_FORMS: &str = "ubuntu:jammy, ubuntu:noble, ubuntu:focal, ubuntu:22.04, \
    ubuntu:24.04, ubuntu:20.04, debian:bookworm, debian:trixie, debian:bullseye, debian:12, \
    debian:13, debian:11 (each optionally followed by +PACKAGE,PACKAGE...), tar:/PATH/TO/ARCHIVE \
    (.tar, .tar.gz, .tgz, .tar.zst, .tar.xz), dir:/PATH, an absolute directory path, or host";

/// A Linux distribution isotest can build a root filesystem of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distro {
    /// Ubuntu, from an Ubuntu archive mirror.
    Ubuntu,
    /// Debian, from a Debian mirror.
    Debian,
}

impl Distro {
    /// The name used in specs: `ubuntu` or `debian`.
    pub fn name(self) -> &'static str {
        match self {
            Distro::Ubuntu => "ubuntu",
            Distro::Debian => "debian",
        }
    }

    /// The suites isotest knows, as (codename, version) pairs.
    pub fn suites(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Distro::Ubuntu => &[("jammy", "22.04"), ("noble", "24.04"), ("focal", "20.04")],
            Distro::Debian => &[("bookworm", "12"), ("trixie", "13"), ("bullseye", "11")],
        }
    }

    /// The codename for a codename or version number, if known.
    pub fn codename(self, text: &str) -> Option<&'static str> {
        self.suites()
            .iter()
            .find(|(code, version)| *code == text || *version == text)
            .map(|(code, _)| *code)
    }
}

/// A distribution release to build with mmdebstrap or debootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Which distribution.
    pub distro: Distro,
    /// The suite's codename (`jammy`, `bookworm`), never a version number.
    pub suite: &'static str,
    /// Packages to include on top of the minbase variant, in the order given.
    pub packages: Vec<String>,
}

/// A parsed root filesystem spec.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Spec {
    /// A distribution release, built once into the cache: `ubuntu:jammy`, `debian:12`.
    Release(Release),
    /// An archive unpacked once into the cache: `tar:PATH`.
    Tar(PathBuf),
    /// An existing tree, used read-only: `dir:PATH` or an absolute path.
    Dir(PathBuf),
    /// The host's own system directories, bind-mounted read-only: `host`.
    Host,
}

impl Spec {
    /// Parses a spec string; the error names the string and lists every accepted form.
    pub fn parse(text: &str) -> Result<Spec> {
        let unknown = |problem: String| Error::Rootfs {
            spec: text.into(),
            problem,
        };
        if text == "host" {
            return Ok(Spec::Host);
        }
        if let Some(path) = text.strip_prefix("dir:") {
            return absolute(text, "dir", path).map(Spec::Dir);
        }
        if let Some(path) = text.strip_prefix("tar:") {
            return absolute(text, "tar", path).map(Spec::Tar);
        }
        if Path::new(text).is_absolute() {
            return Ok(Spec::Dir(text.into()));
        }
        for distro in [Distro::Ubuntu, Distro::Debian] {
            let Some(rest) = text
                .strip_prefix(distro.name())
                .and_then(|r| r.strip_prefix(':'))
            else {
                continue;
            };
            let (suite, packages) = match rest.split_once('+') {
                Some((suite, list)) => (suite, parse_packages(text, list)?),
                None => (rest, Vec::new()),
            };
            let Some(suite) = distro.codename(suite) else {
                let known: Vec<String> = distro
                    .suites()
                    .iter()
                    .map(|(c, v)| format!("{}:{c} ({}:{v})", distro.name(), distro.name()))
                    .collect();
                return Err(unknown(format!(
                    "unknown {} suite {suite:?}; expected one of {}",
                    distro.name(),
                    known.join(", ")
                )));
            };
            return Ok(Spec::Release(Release {
                distro,
                suite,
                packages,
            }));
        }
        Err(unknown(format!(
            "unknown root filesystem spec; expected one of {ACCEPTED_FORMS}"
        )))
    }
}

fn absolute(text: &str, kind: &str, path: &str) -> Result<PathBuf> {
    if Path::new(path).is_absolute() {
        Ok(path.into())
    } else {
        Err(Error::Rootfs {
            spec: text.into(),
            problem: format!("{kind}: needs an absolute path, e.g. {kind}:/srv/rootfs"),
        })
    }
}

fn parse_packages(text: &str, list: &str) -> Result<Vec<String>> {
    let packages: Vec<String> = list.split(',').map(str::to_string).collect();
    // Debian policy: lowercase letters, digits, `+`, `-`, `.`; at least two characters.
    let valid = |p: &String| {
        p.len() >= 2
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')
            })
    };
    match packages.iter().find(|p| !valid(p)) {
        Some(bad) => Err(Error::Rootfs {
            spec: text.into(),
            problem: format!(
                "{bad:?} is not a package name; list packages after `+`, separated by commas, \
                 e.g. debian:bookworm+iproute2,curl"
            ),
        }),
        None => Ok(packages),
    }
}

/// Makes the path of a `tar:` or `dir:` spec absolute, taking a relative one from `base` (the
/// current directory of the CLI, or the manifest directory of the crate that holds a test).
/// Other specs are returned unchanged.
pub fn absolutize(text: &str, base: &Path) -> String {
    for prefix in ["tar:", "dir:"] {
        if let Some(path) = text.strip_prefix(prefix) {
            let path = crate::config::relative_to(&base.to_string_lossy(), path);
            return format!("{prefix}{}", path.display());
        }
    }
    text.to_string()
}

/// A resolved root filesystem: the overlay's lower layer and what to mount on top of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The directory to use as the overlay's lower layer. Never written.
    pub lower: PathBuf,
    /// Host directories the sandbox must bind-mount read-only onto the same path under the new
    /// root (after mounting the overlay, before pivoting). Empty for every spec but `host`,
    /// whose lower layer is only a skeleton of top-level directories and symlinks.
    pub host_binds: Vec<PathBuf>,
}

/// Turns a spec into the directory to use as the overlay's lower layer, building or unpacking
/// it into the cache on first use. For `host`, use [`resolve_full`]: its lower layer is a
/// skeleton that needs [`Resolved::host_binds`].
pub fn resolve(text: &str) -> Result<PathBuf> {
    resolve_full(text).map(|r| r.lower)
}

/// The spec in force: `spec`, else `ISOTEST_ROOTFS`, else [`DEFAULT_SPEC`].
pub fn spec_or_default(spec: Option<&str>) -> String {
    match spec {
        Some(s) => s.to_string(),
        None => std::env::var(ENV_ROOTFS)
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SPEC.to_string()),
    }
}

/// [`resolve`] of `spec`, else of `ISOTEST_ROOTFS`, else of [`DEFAULT_SPEC`].
pub fn resolve_default_or(spec: Option<&str>) -> Result<PathBuf> {
    resolve(&spec_or_default(spec))
}

/// Resolved cache entries of this process, by (cache directory, spec). A later resolve of the
/// same spec costs one stat of the entry's completion marker.
static MEMO: Lazy<Mutex<HashMap<(PathBuf, String), Resolved>>> = Lazy::new(Default::default);

/// Like [`resolve`], but returns the host directories to bind as well.
pub fn resolve_full(text: &str) -> Result<Resolved> {
    let spec = Spec::parse(text)?;
    if let Spec::Dir(path) = &spec {
        return check_dir(text, path).map(|lower| Resolved {
            lower,
            host_binds: Vec::new(),
        });
    }
    let cache = cache::Cache::from_env()?;
    let memo_key = (cache.root().to_path_buf(), text.to_string());
    if let Some(hit) = MEMO
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&memo_key)
    {
        if cache::is_complete(hit.lower.parent().unwrap_or(&hit.lower)) {
            return Ok(hit.clone());
        }
    }
    let resolved = cache.resolve(text, &spec, false)?;
    MEMO.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(memo_key, resolved.clone());
    Ok(resolved)
}

fn check_dir(spec: &str, path: &Path) -> Result<PathBuf> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(path.to_path_buf()),
        Ok(_) => Err(Error::Rootfs {
            spec: spec.into(),
            problem: format!(
                "{} is not a directory; point rootfs or ISOTEST_ROOTFS at an unpacked root filesystem",
                path.display()
            ),
        }),
        Err(e) => Err(Error::Rootfs {
            spec: spec.into(),
            problem: format!(
                "{} does not exist ({e}); point rootfs or ISOTEST_ROOTFS at an unpacked root filesystem",
                path.display()
            ),
        }),
    }
}

/// Writes one progress line to stderr, prefixed `isotest: `.
pub(crate) fn note(line: &str) {
    eprintln!("isotest: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(distro: Distro, suite: &'static str) -> Spec {
        Spec::Release(Release {
            distro,
            suite,
            packages: vec![],
        })
    }

    #[test]
    fn parses_dir_specs() {
        assert_eq!(Spec::parse("/srv/r").unwrap(), Spec::Dir("/srv/r".into()));
        assert_eq!(
            Spec::parse("dir:/srv/r").unwrap(),
            Spec::Dir("/srv/r".into())
        );
        assert!(Spec::parse("dir:rel").is_err());
    }

    #[test]
    fn parses_releases_by_codename_and_version() {
        for (text, distro, suite) in [
            ("ubuntu:jammy", Distro::Ubuntu, "jammy"),
            ("ubuntu:22.04", Distro::Ubuntu, "jammy"),
            ("ubuntu:noble", Distro::Ubuntu, "noble"),
            ("ubuntu:24.04", Distro::Ubuntu, "noble"),
            ("ubuntu:focal", Distro::Ubuntu, "focal"),
            ("ubuntu:20.04", Distro::Ubuntu, "focal"),
            ("debian:bookworm", Distro::Debian, "bookworm"),
            ("debian:12", Distro::Debian, "bookworm"),
            ("debian:trixie", Distro::Debian, "trixie"),
            ("debian:13", Distro::Debian, "trixie"),
            ("debian:bullseye", Distro::Debian, "bullseye"),
            ("debian:11", Distro::Debian, "bullseye"),
        ] {
            assert_eq!(Spec::parse(text).unwrap(), release(distro, suite), "{text}");
        }
        assert_eq!(
            Spec::parse(DEFAULT_SPEC).unwrap(),
            release(Distro::Ubuntu, "jammy")
        );
    }

    #[test]
    fn parses_extra_packages() {
        let Spec::Release(r) = Spec::parse("debian:12+iproute2,curl").unwrap() else {
            panic!("not a release");
        };
        assert_eq!(r.packages, ["iproute2", "curl"]);
        let e = Spec::parse("debian:12+Bad Name").unwrap_err().to_string();
        assert!(e.contains("\"Bad Name\""), "{e}");
        assert!(Spec::parse("debian:12+").is_err());
    }

    #[test]
    fn parses_tar_and_host() {
        assert_eq!(
            Spec::parse("tar:/a/b.tar.zst").unwrap(),
            Spec::Tar("/a/b.tar.zst".into())
        );
        assert!(Spec::parse("tar:b.tar")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert_eq!(Spec::parse("host").unwrap(), Spec::Host);
    }

    #[test]
    fn unknown_specs_name_the_value_and_every_form() {
        let e = Spec::parse("nonsense").unwrap_err().to_string();
        assert!(e.contains("\"nonsense\""), "{e}");
        for form in [
            "ubuntu:jammy",
            "debian:bookworm",
            "tar:",
            "dir:",
            "host",
            "ubuntu:24.04",
        ] {
            assert!(e.contains(form), "{form} missing from: {e}");
        }
        let e = Spec::parse("ubuntu:bionic").unwrap_err().to_string();
        assert!(
            e.contains("\"bionic\"") && e.contains("ubuntu:noble"),
            "{e}"
        );
        let e = Spec::parse("debian:sid").unwrap_err().to_string();
        assert!(e.contains("\"sid\"") && e.contains("debian:trixie"), "{e}");
    }

    #[test]
    fn absolutizes_relative_paths() {
        let base = Path::new("/crate");
        assert_eq!(absolutize("tar:f/r.tar", base), "tar:/crate/f/r.tar");
        assert_eq!(absolutize("dir:/abs", base), "dir:/abs");
        assert_eq!(absolutize("ubuntu:jammy", base), "ubuntu:jammy");
    }

    #[test]
    fn resolve_names_missing_paths() {
        let e = resolve("/does/not/exist").unwrap_err().to_string();
        assert!(
            e.contains("/does/not/exist") && e.contains("ISOTEST_ROOTFS"),
            "{e}"
        );
    }
}
