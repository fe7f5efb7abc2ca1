//! `host`: the host's own system directories, read-only, with no provisioning.
//!
//! The overlay's lower layer is one directory, so `host` resolves to a skeleton in the cache:
//! the standard top-level directories, empty, and the host's top-level symlinks (`bin ->
//! usr/bin` on merged-/usr systems) copied as symlinks. The sandbox then bind-mounts each of
//! [`Skeleton::binds`] read-only onto the same path under the new root.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::cache::{io, Inputs};
use crate::error::Result;

/// The host directories `host` shares, when they exist.
pub const SHARED: &[&str] = &[
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc",
];

/// Empty directories every skeleton has, with their modes.
const EMPTY: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("srv", 0o755),
    ("media", 0o755),
];

/// What one shared top-level name is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// A directory: an empty mount point in the skeleton, bind-mounted from the host.
    Dir,
    /// A symlink, copied into the skeleton as is.
    Symlink(PathBuf),
}

/// The skeleton for the host, as derived from its top-level directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// Each shared name that exists on the host, and its shape.
    pub shared: Vec<(&'static str, Shape)>,
}

impl Skeleton {
    /// Inspects the host's `/`.
    pub fn of_host() -> Skeleton {
        Skeleton::of(Path::new("/"))
    }

    /// Inspects the tree at `root` (the host's `/`, or a test tree).
    pub fn of(root: &Path) -> Skeleton {
        let shared = SHARED
            .iter()
            .filter_map(|name| {
                let path = root.join(name);
                let meta = fs::symlink_metadata(&path).ok()?;
                if meta.file_type().is_symlink() {
                    Some((*name, Shape::Symlink(fs::read_link(&path).ok()?)))
                } else if meta.is_dir() {
                    Some((*name, Shape::Dir))
                } else {
                    None
                }
            })
            .collect();
        Skeleton { shared }
    }

    /// The host directories to bind-mount read-only onto the same path in the sandbox.
    pub fn binds(&self) -> Vec<PathBuf> {
        self.shared
            .iter()
            .filter(|(_, shape)| *shape == Shape::Dir)
            .map(|(name, _)| Path::new("/").join(name))
            .collect()
    }

    /// The cache inputs: the host's shape (a host that changes shape gets a new skeleton).
    pub fn inputs(&self) -> Inputs {
        let shape: Vec<String> = self
            .shared
            .iter()
            .map(|(name, shape)| match shape {
                Shape::Dir => format!("{name}/"),
                Shape::Symlink(t) => format!("{name}->{}", t.display()),
            })
            .collect();
        Inputs {
            label: "host".into(),
            pairs: vec![
                ("kind", "host".into()),
                ("skeleton", "1".into()),
                ("shape", shape.join(" ")),
            ],
        }
    }

    /// Creates the skeleton at `dest`, which must not exist yet.
    pub fn create(&self, dest: &Path) -> Result<()> {
        fs::create_dir(dest).map_err(io("creating", dest))?;
        for (name, mode) in EMPTY {
            let path = dest.join(name);
            fs::create_dir(&path).map_err(io("creating", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                .map_err(io("setting the mode of", &path))?;
        }
        for (name, shape) in &self.shared {
            let path = dest.join(name);
            match shape {
                Shape::Dir => fs::create_dir(&path).map_err(io("creating", &path))?,
                Shape::Symlink(target) => {
                    symlink(target, &path).map_err(io("creating the symlink", &path))?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_the_hosts_shape() {
        let host = tempfile::tempdir().unwrap();
        fs::create_dir(host.path().join("usr")).unwrap();
        fs::create_dir(host.path().join("etc")).unwrap();
        symlink("usr/bin", host.path().join("bin")).unwrap();
        let s = Skeleton::of(host.path());
        assert_eq!(
            s.shared,
            [
                ("usr", Shape::Dir),
                ("bin", Shape::Symlink("usr/bin".into())),
                ("etc", Shape::Dir)
            ]
        );
        assert_eq!(s.binds(), [PathBuf::from("/usr"), PathBuf::from("/etc")]);

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("root");
        s.create(&dest).unwrap();
        assert_eq!(
            fs::read_link(dest.join("bin")).unwrap(),
            PathBuf::from("usr/bin")
        );
        assert!(dest.join("usr").is_dir() && dest.join("proc").is_dir());
        assert!(fs::read_dir(dest.join("usr")).unwrap().next().is_none());

        let mut other = s.clone();
        other.shared.pop();
        assert_ne!(other.inputs().key(), s.inputs().key());
    }
}
