//! `tar:` specs: an archive (plain, gzip, zstd or xz; recognised by its first bytes) unpacked
//! once into the cache, safely.
//!
//! The unpacker trusts nothing in the archive. It never writes outside the destination:
//!
//! - a leading `/` is stripped (the member lands inside the root, as with GNU tar);
//! - a member or hard link target with a `..` component refuses the whole archive;
//! - a member whose path passes through a symlink (or any non-directory) refuses the archive,
//!   so a symlink `etc -> /etc` followed by `etc/passwd` cannot write through it;
//! - an existing entry is unlinked before a member of the same name is created, never opened,
//!   so a symlink planted earlier is replaced rather than followed;
//! - device nodes are created only by root (and skipped, counted, otherwise).
//!
//! Run as root, it keeps numeric owners and modes (setuid bits included); otherwise the files
//! belong to the caller and keep their modes. Extended attributes are not restored.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::cache::{io, remove_tree, Inputs};
use super::note;
use crate::error::{Error, Result};

/// What [`unpack`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Members created (directories, files, links, nodes).
    pub entries: u64,
    /// Bytes of regular file data written.
    pub bytes: u64,
    /// Device nodes skipped because the caller is not root.
    pub skipped_devices: u64,
}

/// The cache inputs of an archive: its content, and whether owners are kept (root) or not.
pub fn inputs(path: &Path, sha256: &str) -> Inputs {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(&name);
    Inputs {
        label: format!("tar-{stem}"),
        pairs: vec![
            ("kind", "tar".into()),
            ("sha256", sha256.into()),
            ("unpacker", "1".into()),
            ("owners", if is_root() { "kept" } else { "caller" }.into()),
        ],
    }
}

/// The archive's SHA-256, memoised in `sidecars` per (path, size, mtime, inode) so that a
/// large archive is hashed once, not on every resolve.
pub fn content_hash(sidecars: &Path, text: &str, path: &Path) -> Result<String> {
    let meta = match fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => {
            return Err(Error::Rootfs {
                spec: text.into(),
                problem: format!(
                "{} is not a file; tar: needs an archive (.tar, .tar.gz, .tgz, .tar.zst, .tar.xz)",
                path.display()
            ),
            })
        }
        Err(e) => {
            return Err(Error::Rootfs {
                spec: text.into(),
                problem: format!("archive {} cannot be read ({e})", path.display()),
            })
        }
    };
    use std::os::unix::fs::MetadataExt;
    let stamp = format!(
        "{}\n{}\n{}.{}\n{}:{}\n",
        path.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.dev(),
        meta.ino()
    );
    let name: String = Sha256::digest(path.as_os_str().as_encoded_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sidecar = sidecars.join(name);
    if let Ok(memo) = fs::read_to_string(&sidecar) {
        if let Some(hash) = memo.strip_prefix(&stamp) {
            let hash = hash.trim();
            if hash.len() == 64 {
                return Ok(hash.to_string());
            }
        }
    }
    let start = Instant::now();
    let mut file = File::open(path).map_err(io("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hash: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if start.elapsed() > Duration::from_secs(1) {
        note(&format!(
            "hashed {} in {:.1}s",
            path.display(),
            start.elapsed().as_secs_f64()
        ));
    }
    // The memo is an optimisation: failing to write it costs a rehash next time, nothing more.
    let _ = fs::create_dir_all(sidecars).and_then(|()| {
        let tmp = sidecars.join(format!(".tmp-{}", std::process::id()));
        fs::write(&tmp, format!("{stamp}{hash}\n"))?;
        fs::rename(&tmp, &sidecar)
    });
    Ok(hash)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Opens the archive with the decompressor its first bytes call for.
fn open(text: &str, path: &Path) -> Result<Box<dyn Read>> {
    let mut file = File::open(path).map_err(io("opening", path))?;
    let mut magic = [0u8; 6];
    let mut have = 0;
    while have < magic.len() {
        match file.read(&mut magic[have..]).map_err(io("reading", path))? {
            0 => break,
            n => have += n,
        }
    }
    file.rewind().map_err(io("reading", path))?;
    let file = BufReader::with_capacity(1 << 20, file);
    let magic = &magic[..have];
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(file).map_err(|e| Error::Rootfs {
                spec: text.into(),
                problem: format!("cannot start zstd decompression of {}: {e}", path.display()),
            })?,
        )
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(file))
    } else {
        Box::new(file)
    })
}

/// A member's path inside the root: `.` and a leading `/` dropped, `..` refused. `None` for the
/// root itself (`./`).
fn member_path(raw: &Path) -> Option<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some((!out.as_os_str().is_empty()).then_some(out))
}

struct Unpacker<'a> {
    text: &'a str,
    archive: &'a Path,
    dest: &'a Path,
    root: bool,
    done: Unpacked,
    /// Directory modes and mtimes, applied last so read-only directories can be filled first.
    dirs: Vec<(PathBuf, u32, u64)>,
}

/// Unpacks `archive` into `dest`, which must not exist yet. `text` is the spec, for messages.
pub fn unpack(text: &str, archive: &Path, dest: &Path) -> Result<Unpacked> {
    let reader = open(text, archive)?;
    fs::create_dir(dest).map_err(io("creating", dest))?;
    let mut u = Unpacker {
        text,
        archive,
        dest,
        root: is_root(),
        done: Unpacked::default(),
        dirs: Vec::new(),
    };
    let mut tar = tar::Archive::new(reader);
    let start = Instant::now();
    let mut last_note = start;
    let entries = tar.entries().map_err(|e| u.bad(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| u.bad(e))?;
        u.member(&mut entry)?;
        if last_note.elapsed() >= Duration::from_secs(3) {
            last_note = Instant::now();
            note(&format!(
                "[{:>4}s] unpacking {}: {} entries, {} MB",
                start.elapsed().as_secs(),
                text,
                u.done.entries,
                u.done.bytes / 1_000_000
            ));
        }
    }
    for (dir, mode, mtime) in u.dirs.iter().rev() {
        if let Ok(f) = File::open(dir) {
            let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(*mtime));
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
            .map_err(io("setting the mode of", dir))?;
    }
    if u.done.skipped_devices > 0 {
        note(&format!(
            "skipped {} device nodes of {text}: only root can create them",
            u.done.skipped_devices
        ));
    }
    Ok(u.done)
}

impl Unpacker<'_> {
    fn bad(&self, e: impl std::fmt::Display) -> Error {
        Error::Rootfs {
            spec: self.text.into(),
            problem: format!("cannot read archive {}: {e}", self.archive.display()),
        }
    }

    fn hostile(&self, raw: &Path, what: &str) -> Error {
        Error::Rootfs {
            spec: self.text.into(),
            problem: format!(
                "archive member {:?} {what}; refusing to unpack {} (it would write outside the root)",
                raw.display().to_string(),
                self.archive.display()
            ),
        }
    }

    fn member<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        use tar::EntryType as T;
        let raw = entry.path().map_err(|e| self.bad(e))?.into_owned();
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| self.bad(e))? & 0o7777;
        // Some writers leave these fields blank; GNU tar reads blank as 0, and so does isotest.
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header.mtime().unwrap_or(0);
        let Some(rel) = member_path(&raw) else {
            return Err(self.hostile(&raw, "has a `..` component"));
        };
        let Some(rel) = rel else {
            // `./`: the root's own owner and mode.
            if kind == T::Directory {
                self.chown(self.dest, uid, gid)?;
                self.dirs.push((self.dest.to_path_buf(), mode, mtime));
            }
            return Ok(());
        };
        let path = self.dest.join(&rel);
        match kind {
            T::Directory => {
                self.parents(&raw, &rel)?;
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&path).map_err(io("replacing", &path))?;
                        fs::create_dir(&path).map_err(io("creating", &path))?;
                    }
                    Err(_) => fs::create_dir(&path).map_err(io("creating", &path))?,
                }
                self.chown(&path, uid, gid)?;
                self.dirs.push((path, mode, mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.vacate(&raw, &rel)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io("creating", &path))?;
                self.done.bytes += io::copy(entry, &mut f).map_err(io("writing", &path))?;
                if self.root {
                    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                        .map_err(io("changing the owner of", &path))?;
                }
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io("setting the mode of", &path))?;
                let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.bad(e))?
                    .ok_or_else(|| self.bad(format!("symlink {} has no target", raw.display())))?
                    .into_owned();
                self.vacate(&raw, &rel)?;
                // The target is stored as written: it is never followed while unpacking, and
                // inside the sandbox it resolves within the new root.
                symlink(&target, &path).map_err(io("creating the symlink", &path))?;
                self.chown(&path, uid, gid)?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.bad(e))?
                    .ok_or_else(|| self.bad(format!("hard link {} has no target", raw.display())))?
                    .into_owned();
                let Some(Some(target_rel)) = member_path(&target) else {
                    return Err(self.hostile(&raw, "is a hard link to a path outside the root"));
                };
                self.check_parents(&raw, &target_rel)?;
                let source = self.dest.join(&target_rel);
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(self.bad(format!(
                            "hard link {} points to {}, which is not an earlier member",
                            raw.display(),
                            target.display()
                        )))
                    }
                }
                self.vacate(&raw, &rel)?;
                // link(2) does not follow a symlink at `source`: it links the symlink itself.
                fs::hard_link(&source, &path).map_err(io("creating the hard link", &path))?;
            }
            T::Char | T::Block | T::Fifo => {
                self.vacate(&raw, &rel)?;
                if !self.node(entry, kind, &path, mode)? {
                    self.done.skipped_devices += 1;
                    return Ok(());
                }
                self.chown(&path, uid, gid)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(io("setting the mode of", &path))?;
            }
            // Global pax headers and other metadata-only members carry no file.
            _ => return Ok(()),
        }
        self.done.entries += 1;
        Ok(())
    }

    /// Creates a device node or FIFO; `false` when the caller may not create device nodes.
    fn node<R: Read>(
        &self,
        entry: &tar::Entry<R>,
        kind: tar::EntryType,
        path: &Path,
        mode: u32,
    ) -> Result<bool> {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let perm = Mode::from_bits_truncate(mode & 0o777);
        if kind == tar::EntryType::Fifo {
            nix::unistd::mkfifo(path, perm).map_err(|errno| Error::Sys {
                call: format!("mkfifo({:?})", path.display().to_string()),
                errno: crate::error::Errno(errno as i32),
            })?;
            return Ok(true);
        }
        if !self.root {
            return Ok(false);
        }
        let header = entry.header();
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let sflag = if kind == tar::EntryType::Char {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        match mknod(path, sflag, perm, makedev(major.into(), minor.into())) {
            Ok(()) => Ok(true),
            // Root of a user namespace: no CAP_MKNOD in the initial one.
            Err(nix::errno::Errno::EPERM) => Ok(false),
            Err(errno) => Err(Error::Sys {
                call: format!("mknod({:?}, {major}, {minor})", path.display().to_string()),
                errno: crate::error::Errno(errno as i32),
            }),
        }
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        if self.root {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(io("changing the owner of", path))?;
        }
        Ok(())
    }

    /// Creates the missing parents of `rel`, refusing to pass through anything but a real
    /// directory.
    fn parents(&self, raw: &Path, rel: &Path) -> Result<()> {
        self.walk_parents(raw, rel, true)
    }

    /// Like [`Self::parents`] but creates nothing (for a hard link's target).
    fn check_parents(&self, raw: &Path, rel: &Path) -> Result<()> {
        self.walk_parents(raw, rel, false)
    }

    fn walk_parents(&self, raw: &Path, rel: &Path, create: bool) -> Result<()> {
        let mut cur = self.dest.to_path_buf();
        for c in rel.parent().into_iter().flat_map(Path::components) {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) => return Err(self.through(raw, &cur, m.file_type().is_symlink())),
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(io("creating", &cur))?
                }
                Err(e) if create => return Err(io("inspecting", &cur)(e)),
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn through(&self, raw: &Path, cur: &Path, symlink: bool) -> Error {
        let rel = cur.strip_prefix(self.dest).unwrap_or(cur).display();
        if symlink {
            self.hostile(raw, &format!("passes through the symlink {rel:?}"))
        } else {
            self.hostile(
                raw,
                &format!("passes through {rel:?}, which is not a directory"),
            )
        }
    }

    /// Makes room for a non-directory member: parents created, whatever is at its place removed.
    fn vacate(&self, raw: &Path, rel: &Path) -> Result<()> {
        self.parents(raw, rel)?;
        let path = self.dest.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => remove_tree(&path),
            Ok(_) => fs::remove_file(&path).map_err(io("replacing", &path)),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_are_contained() {
        let p = |s: &str| member_path(Path::new(s));
        assert_eq!(p("./usr/bin"), Some(Some("usr/bin".into())));
        assert_eq!(p("/etc/passwd"), Some(Some("etc/passwd".into())));
        assert_eq!(p("./"), Some(None));
        assert_eq!(p("a/../../b"), None);
        assert_eq!(p(".."), None);
    }

    #[test]
    fn inputs_name_the_archive_and_its_content() {
        let a = inputs(Path::new("/x/ubuntu-base-22.04.tar.gz"), "aa");
        assert!(a.key().starts_with("tar-ubuntu-base-22.04-"), "{}", a.key());
        assert_ne!(
            a.key(),
            inputs(Path::new("/x/ubuntu-base-22.04.tar.gz"), "ab").key()
        );
        assert_eq!(
            a.key(),
            inputs(Path::new("/y/ubuntu-base-22.04.tar.gz"), "aa").key()
        );
    }

    #[test]
    fn content_hash_is_memoised_per_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tar");
        fs::write(&file, "one").unwrap();
        let side = dir.path().join("side");
        let h1 = content_hash(&side, "t", &file).unwrap();
        assert_eq!(fs::read_dir(&side).unwrap().count(), 1);
        assert_eq!(h1, content_hash(&side, "t", &file).unwrap());
        fs::write(&file, "two").unwrap();
        let f = File::options().write(true).open(&file).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(1)).unwrap();
        assert_ne!(h1, content_hash(&side, "t", &file).unwrap());
        let e = content_hash(&side, "tar:/nope", Path::new("/nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nope"), "{e}");
    }
}
