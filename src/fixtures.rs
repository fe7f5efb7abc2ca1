//! Fixtures for `#[isolated]` tests, resolved by [rstest](https://docs.rs/rstest) by argument
//! name and evaluated inside the sandbox.
//!
//! ```no_run
//! use isotest::fixtures::*;
//! use isotest::isolated;
//! use rstest::rstest;
//!
//! #[rstest]
//! #[isolated(hostname = "web1")]
//! fn sees_its_own_world(hostname: Hostname, mounts: Mounts, sandbox: SandboxInfo, changes: Changes) {
//!     assert_eq!(hostname.as_str(), "web1");
//!     assert_eq!(mounts.get("/proc").unwrap().fs_type, "proc");
//!     assert_eq!(sandbox.os_release.id, "debian");
//!     std::fs::write("/etc/myapp.conf", "x").unwrap();
//!     assert!(changes.created().contains(&"/etc/myapp.conf".into()));
//! }
//! ```
//!
//! Put `#[isolated]` below `#[rstest]`: rstest turns the arguments into a test without
//! arguments whose body resolves each fixture, and `#[isolated]` runs that whole body in the
//! sandbox, so the fixtures describe the sandbox, not the host.
//!
//! Each fixture is what rstest's `#[fixture]` generates for a function without arguments: a
//! function of that name and a type of that name whose `default()` rstest calls (so that
//! `isotest` does not depend on rstest). `#[from(isotest::fixtures::hostname)] h: Hostname`
//! works as well as the glob import.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variable carrying the test's name into the sandbox.
pub(crate) const ENV_TEST: &str = "__ISOTEST_TEST";
/// Environment variable carrying the root filesystem spec into the sandbox.
pub(crate) const ENV_ROOTFS: &str = "__ISOTEST_ROOTFS";

/// Defines a fixture the way rstest's `#[fixture]` does for a function without arguments.
macro_rules! fixture {
    ($(#[$doc:meta])* $name:ident -> $ty:ty $body:block) => {
        $(#[$doc])*
        pub fn $name() -> $ty $body

        #[doc = concat!("rstest's handle on the [`", stringify!($name), "()`] fixture.")]
        #[allow(non_camel_case_types)]
        #[derive(Debug)]
        pub struct $name {}

        impl $name {
            /// The fixture's value (what rstest calls for an argument of this name).
            #[allow(clippy::should_implement_trait)]
            pub fn default() -> $ty {
                $name()
            }

            /// The fixture's value.
            pub fn get() -> $ty {
                $name()
            }
        }
    };
}

/// The sandbox's hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Hostname {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Hostname {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

fixture! {
    /// The hostname, from `uname(2)`.
    hostname -> Hostname {
        Hostname(
            nix::sys::utsname::uname()
                .expect("uname")
                .nodename()
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount's id.
    pub id: u64,
    /// The parent mount's id.
    pub parent: u64,
    /// The directory of the file system that forms this mount's root.
    pub root: String,
    /// Where it is mounted, relative to the process's root.
    pub mount_point: String,
    /// Per-mount options (`rw`, `nosuid`, ...).
    pub options: Vec<String>,
    /// The file system type (`proc`, `overlay`, ...).
    pub fs_type: String,
    /// The source (`/dev/sda1`, `tmpfs`, ...).
    pub source: String,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl Mount {
    /// The mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// Parses one line; `None` if it is not a mountinfo line.
    pub fn parse(line: &str) -> Option<Mount> {
        let (head, tail) = line.split_once(" - ")?;
        let head: Vec<&str> = head.split(' ').collect();
        let tail: Vec<&str> = tail.split(' ').collect();
        if head.len() < 6 || tail.len() < 3 {
            return None;
        }
        let list = |s: &str| s.split(',').map(unescape).collect();
        Some(Mount {
            id: head[0].parse().ok()?,
            parent: head[1].parse().ok()?,
            root: unescape(head[3]),
            mount_point: unescape(head[4]),
            options: list(head[5]),
            fs_type: unescape(tail[0]),
            source: unescape(tail[1]),
            super_options: list(tail[2]),
        })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount table, as `/proc/self/mountinfo` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts(Vec<Mount>);

impl Mounts {
    /// Parses the text of a mountinfo file.
    pub fn parse(text: &str) -> Mounts {
        Mounts(text.lines().filter_map(Mount::parse).collect())
    }

    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> std::io::Result<Mounts> {
        Self::read_from(Path::new("/proc/self/mountinfo"))
    }

    /// Reads a mountinfo file.
    pub fn read_from(path: &Path) -> std::io::Result<Mounts> {
        std::fs::read_to_string(path).map(|text| Mounts::parse(&text))
    }

    /// The mount visible at `mount_point` (the last one mounted there).
    pub fn get(&self, mount_point: &str) -> Option<&Mount> {
        self.0.iter().rev().find(|m| m.mount_point == mount_point)
    }

    /// Every mount, in mount order.
    pub fn iter(&self) -> std::slice::Iter<'_, Mount> {
        self.0.iter()
    }

    /// How many mounts.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No mounts at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Mounts {
    type Item = &'a Mount;
    type IntoIter = std::slice::Iter<'a, Mount>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

fixture! {
    /// The mount table of the sandbox, read from `/proc/self/mountinfo`.
    mounts -> Mounts {
        Mounts::read().expect("read /proc/self/mountinfo")
    }
}

/// The fields of `/etc/os-release` that identify a distribution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID` (`debian`, `ubuntu`).
    pub id: String,
    /// `VERSION_ID` (`12`, `22.04`); empty for rolling releases.
    pub version_id: String,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
    /// Every field, unquoted.
    pub fields: BTreeMap<String, String>,
}

impl OsRelease {
    /// Parses os-release(5) text.
    pub fn parse(text: &str) -> OsRelease {
        let fields: BTreeMap<String, String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                (k.trim().to_string(), v.replace("\\\"", "\""))
            })
            .collect();
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        OsRelease {
            id: get("ID"),
            version_id: get("VERSION_ID"),
            pretty_name: get("PRETTY_NAME"),
            fields,
        }
    }
}

/// What the sandbox is: which test, on which root filesystem, in which namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// The test's name as libtest knows it (`module::test`).
    pub test: String,
    /// The root filesystem spec the sandbox was built from.
    pub rootfs: String,
    /// The root filesystem's `/etc/os-release` (or `/usr/lib/os-release`).
    pub os_release: OsRelease,
    /// The inode of the sandbox's pid namespace (`readlink /proc/self/ns/pid`).
    pub pid_namespace: u64,
    /// The sandbox runs without host root: its uid 0 is not the host's (the uid map is not the
    /// identity over the full range).
    pub rootless: bool,
}

fixture! {
    /// What the supervisor knows about this sandbox. Panics outside an `#[isolated]` test.
    sandbox -> SandboxInfo {
        let env = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!(
                    "the `sandbox` fixture works only in #[isolated] tests; put #[isolated] \
                     below #[rstest]"
                )
            })
        };
        let os_release = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| OsRelease::parse(&t))
            .unwrap_or_default();
        let ns = std::fs::read_link("/proc/self/ns/pid").expect("readlink /proc/self/ns/pid");
        let pid_namespace = ns
            .to_string_lossy()
            .trim_start_matches("pid:[")
            .trim_end_matches(']')
            .parse()
            .unwrap_or(0);
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let identity = uid_map
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["0", "0", "4294967295"];
        SandboxInfo {
            test: env(ENV_TEST),
            rootfs: env(ENV_ROOTFS),
            os_release,
            pid_namespace,
            rootless: !identity,
        }
    }
}

/// What happened to a path in the sandbox's root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// It did not exist in the root filesystem.
    Created,
    /// It exists in the root filesystem and was changed (content, metadata or type).
    Modified,
    /// It exists in the root filesystem and was removed.
    Deleted,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        })
    }
}

/// One changed path, absolute inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    /// The path.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.path.display())
    }
}

/// The test's changes to the root filesystem, read from the overlay's upper layer each time a
/// method is called (so: the changes so far). Directories copied up only because something
/// below them changed, and what the harness itself made, are not changes; bind mounts and
/// tmpfs mounts (`/tmp`, `/dev`) are not part of the root filesystem.
#[derive(Debug, Clone, Copy)]
pub struct Changes(());

impl Changes {
    /// Every change, sorted by path.
    pub fn list(&self) -> Vec<Change> {
        crate::teardown::changes().unwrap_or_else(|e| panic!("isotest: changes fixture: {e}"))
    }

    fn of(&self, kind: ChangeKind) -> Vec<PathBuf> {
        self.list()
            .into_iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.path)
            .collect()
    }

    /// Paths created so far.
    pub fn created(&self) -> Vec<PathBuf> {
        self.of(ChangeKind::Created)
    }

    /// Paths modified so far.
    pub fn modified(&self) -> Vec<PathBuf> {
        self.of(ChangeKind::Modified)
    }

    /// Paths deleted so far.
    pub fn deleted(&self) -> Vec<PathBuf> {
        self.of(ChangeKind::Deleted)
    }
}

fixture! {
    /// A handle on the test's changes to the root filesystem. Panics outside an `#[isolated]`
    /// test.
    changes -> Changes {
        if !crate::teardown::inside() {
            panic!(
                "the `changes` fixture works only in #[isolated] tests; put #[isolated] below \
                 #[rstest]"
            );
        }
        Changes(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let m = Mounts::parse(
            "22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/proc/self/fd/7\n\
             23 22 0:22 / /proc rw,nosuid - proc proc rw\n\
             24 22 0:23 / /my\\040dir ro,nosuid shared:3 master:1 - tmpfs none rw,size=4k\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("/proc").unwrap().fs_type, "proc");
        let d = m.get("/my dir").unwrap();
        assert!(d.read_only());
        assert_eq!((d.source.as_str(), d.parent), ("none", 22));
        assert_eq!(d.super_options, ["rw", "size=4k"]);
        assert!(!m.get("/").unwrap().read_only());
    }

    #[test]
    fn parses_os_release() {
        let o = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID='12'\n# c\n",
        );
        assert_eq!(o.id, "debian");
        assert_eq!(o.version_id, "12");
        assert_eq!(o.pretty_name, "Debian GNU/Linux 12 (bookworm)");
    }
}
