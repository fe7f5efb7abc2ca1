//! Where root filesystems come from. A spec names the lower layer of a sandbox's overlay.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A parsed root filesystem spec.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Spec {
    /// An existing tree, used read-only: `dir:PATH` or an absolute path.
    Dir(PathBuf),
}

/// The forms [`Spec::parse`] accepts, for error messages.
pub const ACCEPTED_FORMS: &str = "an absolute directory path or dir:PATH";

impl Spec {
    /// Parses a spec string.
    pub fn parse(text: &str) -> Result<Spec> {
        if let Some(path) = text.strip_prefix("dir:") {
            if !Path::new(path).is_absolute() {
                return Err(Error::Rootfs {
                    spec: text.into(),
                    problem: "dir: needs an absolute path, e.g. dir:/srv/rootfs".into(),
                });
            }
            return Ok(Spec::Dir(path.into()));
        }
        if Path::new(text).is_absolute() {
            return Ok(Spec::Dir(text.into()));
        }
        Err(Error::Rootfs {
            spec: text.into(),
            problem: format!("unknown root filesystem spec; expected {ACCEPTED_FORMS}"),
        })
    }
}

/// Turns a spec into the directory to use as the overlay's lower layer.
pub fn resolve(text: &str) -> Result<PathBuf> {
    match Spec::parse(text)? {
        Spec::Dir(path) => check_dir(text, &path),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dir_specs() {
        assert_eq!(Spec::parse("/srv/r").unwrap(), Spec::Dir("/srv/r".into()));
        assert_eq!(
            Spec::parse("dir:/srv/r").unwrap(),
            Spec::Dir("/srv/r".into())
        );
        assert!(Spec::parse("dir:rel").is_err());
        assert!(Spec::parse("nonsense")
            .unwrap_err()
            .to_string()
            .contains("nonsense"));
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
