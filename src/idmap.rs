//! The id maps of a sandbox's user namespace, chosen once per process.
//!
//! - As root: the identity over the full range. Files keep their owners, tools that switch users
//!   work, and the test's root holds its capabilities only inside.
//! - As an ordinary user with a subordinate range in `/etc/subuid` and `/etc/subgid` (and
//!   `newuidmap`/`newgidmap` installed): the caller is root inside, and ids 1..N map onto the
//!   range, so `useradd`, `su`, `chown` and package managers work.
//! - Otherwise: the caller alone, as root inside, with `setgroups` denied.

use std::path::Path;
use std::process::Command;

use crate::error::{Errno, Error, Result};

/// Environment variable that turns subordinate ranges off (`ISOTEST_SUBIDS=0`).
pub const ENV_SUBIDS: &str = "ISOTEST_SUBIDS";

/// One line of a map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First id inside.
    pub inside: u32,
    /// First id outside.
    pub outside: u32,
    /// How many.
    pub count: u32,
}

/// How the sandbox's ids map onto the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMap {
    /// Root: `0 0 4294967295` for both.
    Identity,
    /// The caller alone (`setgroups` denied).
    Single {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
    },
    /// The caller as root and a subordinate range above it, written by `newuidmap`/`newgidmap`.
    Subordinate {
        /// uid ranges.
        uids: Vec<Range>,
        /// gid ranges.
        gids: Vec<Range>,
    },
}

impl IdMap {
    /// How many gids from 0 up are mapped inside.
    pub fn mapped_gids(&self) -> u32 {
        match self {
            IdMap::Identity => u32::MAX,
            IdMap::Single { .. } => 1,
            IdMap::Subordinate { gids, .. } => gids.iter().map(|r| r.count).sum(),
        }
    }

    /// The maps of a nested user namespace, written from inside this one: the same ids, each
    /// to itself. Returns `(uid_map, gid_map)`.
    pub fn nested(&self) -> (String, String) {
        let restate = |ranges: &[Range]| -> String {
            ranges
                .iter()
                .map(|r| format!("{} {} {}\n", r.inside, r.inside, r.count))
                .collect()
        };
        match self {
            IdMap::Identity => ("0 0 4294967295\n".into(), "0 0 4294967295\n".into()),
            IdMap::Single { .. } => ("0 0 1\n".into(), "0 0 1\n".into()),
            IdMap::Subordinate { uids, gids } => (restate(uids), restate(gids)),
        }
    }

    /// Writes the maps of process `pid`, which has just entered its new user namespace.
    pub fn write(&self, pid: libc::pid_t) -> Result<()> {
        match self {
            IdMap::Identity => {
                write(pid, "uid_map", "0 0 4294967295\n")?;
                write(pid, "gid_map", "0 0 4294967295\n")
            }
            IdMap::Single { uid, gid } => {
                write(pid, "setgroups", "deny\n")?;
                write(pid, "uid_map", &format!("0 {uid} 1\n"))?;
                write(pid, "gid_map", &format!("0 {gid} 1\n"))
            }
            IdMap::Subordinate { uids, gids } => {
                helper("newuidmap", pid, uids)?;
                helper("newgidmap", pid, gids)
            }
        }
    }
}

fn write(pid: libc::pid_t, file: &str, content: &str) -> Result<()> {
    crate::sys::write_file(&format!("/proc/{pid}/{file}"), content)
}

fn helper(program: &str, pid: libc::pid_t, ranges: &[Range]) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let out = cmd.output().map_err(|e| Error::Sys {
        call: format!("{program} {pid}"),
        errno: Errno(e.raw_os_error().unwrap_or(libc::ENOENT)),
    })?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "{program} {pid} failed ({}): {}; check /etc/subuid and /etc/subgid, or set {ENV_SUBIDS}=0",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The subordinate range `/etc/subuid`-style `text` grants `name` (or the numeric `id`): the
/// first matching line.
pub fn subordinate(text: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let matches = Some(who) == name || who.parse::<u32>().ok() == Some(id);
        let (start, count) = (start.parse().ok()?, count.parse().ok()?);
        (matches && count > 0).then_some((start, count))
    })
}

/// Chooses the map for a caller: `root`, else its subordinate ranges (when `subuid` and
/// `subgid` grant both and the helpers exist), else the caller alone.
pub fn choose(
    root: bool,
    uid: u32,
    gid: u32,
    name: Option<&str>,
    subuid: &str,
    subgid: &str,
    helpers: bool,
) -> IdMap {
    if root {
        return IdMap::Identity;
    }
    match (
        helpers,
        subordinate(subuid, name, uid),
        subordinate(subgid, name, uid),
    ) {
        (true, Some((us, uc)), Some((gs, gc))) => IdMap::Subordinate {
            uids: vec![
                Range {
                    inside: 0,
                    outside: uid,
                    count: 1,
                },
                Range {
                    inside: 1,
                    outside: us,
                    count: uc,
                },
            ],
            gids: vec![
                Range {
                    inside: 0,
                    outside: gid,
                    count: 1,
                },
                Range {
                    inside: 1,
                    outside: gs,
                    count: gc,
                },
            ],
        },
        _ => IdMap::Single { uid, gid },
    }
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The map for this process, chosen once.
pub fn current() -> &'static IdMap {
    static MAP: once_cell::sync::Lazy<IdMap> = once_cell::sync::Lazy::new(|| {
        let (uid, gid) = crate::sys::ids();
        let off = std::env::var(ENV_SUBIDS).is_ok_and(|v| v == "0");
        let read = |p: &str| std::fs::read_to_string(Path::new(p)).unwrap_or_default();
        choose(
            uid == 0,
            uid,
            gid,
            user_name(uid).as_deref(),
            &read("/etc/subuid"),
            &read("/etc/subgid"),
            !off && on_path("newuidmap") && on_path("newgidmap"),
        )
    });
    &MAP
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "alice:100000:65536\n1002:200000:1000\nbob:300000:0\n";

    #[test]
    fn finds_ranges_by_name_or_id() {
        assert_eq!(subordinate(SUB, Some("alice"), 1001), Some((100000, 65536)));
        assert_eq!(subordinate(SUB, Some("carol"), 1002), Some((200000, 1000)));
        assert_eq!(subordinate(SUB, Some("bob"), 1003), None, "empty range");
        assert_eq!(subordinate(SUB, None, 9999), None);
        assert_eq!(subordinate("garbage\n::\n", Some("alice"), 1), None);
    }

    #[test]
    fn root_gets_the_identity() {
        let m = choose(true, 0, 0, Some("root"), SUB, SUB, true);
        assert_eq!(m, IdMap::Identity);
        assert_eq!(m.mapped_gids(), u32::MAX);
        assert_eq!(m.nested().0, "0 0 4294967295\n");
    }

    #[test]
    fn users_with_a_range_get_it_above_themselves() {
        let m = choose(false, 1001, 1001, Some("alice"), SUB, SUB, true);
        let IdMap::Subordinate { uids, gids } = &m else {
            panic!("{m:?}")
        };
        assert_eq!(
            uids[..],
            [
                Range {
                    inside: 0,
                    outside: 1001,
                    count: 1
                },
                Range {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                }
            ]
        );
        assert_eq!(gids.len(), 2);
        assert_eq!(m.mapped_gids(), 65537);
        let nested = "0 0 1\n1 1 65536\n".to_string();
        assert_eq!(m.nested(), (nested.clone(), nested));
    }

    #[test]
    fn users_without_a_range_or_helpers_map_alone() {
        let single = IdMap::Single {
            uid: 1003,
            gid: 1003,
        };
        assert_eq!(
            choose(false, 1003, 1003, Some("bob"), SUB, SUB, true),
            single
        );
        let m = choose(false, 1003, 1003, Some("alice"), SUB, SUB, false);
        assert_eq!(m, single, "no newuidmap");
        assert_eq!(m.mapped_gids(), 1);
        // A uid range without a gid range is not enough.
        let m = choose(false, 1001, 1001, Some("alice"), SUB, "", true);
        assert_eq!(
            m,
            IdMap::Single {
                uid: 1001,
                gid: 1001
            }
        );
    }
}
