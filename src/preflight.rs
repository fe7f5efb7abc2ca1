//! Checks, once per process, that this kernel can run a sandbox, and says precisely what to
//! change when it cannot. The probing reads `/proc`; the judging is pure, so every diagnostic
//! is unit-tested over simulated probe results.

use crate::error::Error;

/// Environment variable that turns an unsupported environment into skipped tests.
pub const ENV_SKIP_UNSUPPORTED: &str = "ISOTEST_SKIP_UNSUPPORTED";

/// What the kernel and the caller look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The running kernel's release, e.g. `6.18.44-generic`.
    pub release: String,
    /// `(major, minor)` of the running kernel.
    pub kernel: (u32, u32),
    /// The caller's effective uid is 0.
    pub root: bool,
    /// The kernel has user namespaces at all (`/proc/self/ns/user` exists).
    pub user_namespaces: bool,
    /// `user.max_user_namespaces`, if readable.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.unprivileged_userns_clone` (Debian's older kernels), if present.
    pub unprivileged_userns_clone: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later), if present.
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
    /// overlayfs is listed in `/proc/filesystems` (or can be loaded on demand).
    pub overlay: bool,
}

/// One reason a sandbox cannot start here, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What it is about: `kernel`, `overlayfs`, `user namespaces` or `privileged`.
    pub topic: &'static str,
    /// What is wrong.
    pub what: String,
    /// What to do about it.
    pub fix: String,
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Error {
        Error::Unsupported {
            what: p.what,
            fix: p.fix,
        }
    }
}

fn problem(topic: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        topic,
        what: what.into(),
        fix: fix.into(),
    }
}

/// Judges a probe: every problem that keeps a sandbox from starting, most basic first.
/// `privileged` sandboxes need no user namespace.
pub fn diagnose(p: &Probe, privileged: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    if p.kernel < (6, 6) {
        out.push(problem(
            "kernel",
            format!(
                "kernel {}.{} is too old: isotest needs Linux 6.6 or newer (overlayfs with user extended attributes on tmpfs inside a user namespace)",
                p.kernel.0, p.kernel.1
            ),
            "run the tests on a newer kernel",
        ));
    }
    if !p.overlay {
        out.push(problem(
            "overlayfs",
            "overlayfs is not available in this kernel",
            "load it with `sudo modprobe overlay` (or enable CONFIG_OVERLAY_FS)",
        ));
    }
    if privileged {
        if !p.root {
            out.push(problem(
                "privileged",
                "privileged = true needs root on the host",
                "run the tests as root, or drop privileged = true",
            ));
        }
        return out;
    }
    if !p.user_namespaces {
        out.push(problem(
            "user namespaces",
            "this kernel has no user namespaces",
            "use a kernel built with CONFIG_USER_NS=y",
        ));
        return out;
    }
    if p.max_user_namespaces == Some(0) {
        out.push(problem(
            "user namespaces",
            "user namespaces are disabled by user.max_user_namespaces=0",
            "run `sudo sysctl -w user.max_user_namespaces=15000`",
        ));
    }
    if !p.root {
        if p.unprivileged_userns_clone == Some(0) {
            out.push(problem(
                "user namespaces",
                "unprivileged user namespaces are disabled by kernel.unprivileged_userns_clone=0",
                "run `sudo sysctl -w kernel.unprivileged_userns_clone=1` or run as root",
            ));
        }
        if p.apparmor_restrict_unprivileged_userns == Some(1) {
            out.push(problem(
                "user namespaces",
                "user namespaces are restricted by kernel.apparmor_restrict_unprivileged_userns=1",
                "run `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or run as root",
            ));
        }
    }
    out
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Parses `6.18.44-foo` into `(6, 18)`.
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Probes the running kernel.
pub fn probe() -> Probe {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    Probe {
        kernel: parse_kernel_release(release.trim()).unwrap_or((0, 0)),
        release: release.trim().to_string(),
        root: crate::sys::ids().0 == 0,
        user_namespaces: std::path::Path::new("/proc/self/ns/user").exists(),
        max_user_namespaces: read_number("/proc/sys/user/max_user_namespaces"),
        unprivileged_userns_clone: read_number("/proc/sys/kernel/unprivileged_userns_clone"),
        apparmor_restrict_unprivileged_userns: read_number(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
        // overlay is often a module loaded on first mount: trust the module tree too.
        overlay: filesystems.lines().any(|l| l.ends_with("\toverlay"))
            || module_available("overlay"),
    }
}

fn module_available(name: &str) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dep = std::fs::read_to_string(format!("/lib/modules/{}/modules.dep", release.trim()))
        .unwrap_or_default();
    dep.lines().any(|l| l.contains(&format!("/{name}.ko")))
}

/// The problems of this machine, probed once per process.
pub fn check(privileged: bool) -> Result<(), Problem> {
    static PROBE: once_cell::sync::Lazy<Probe> = once_cell::sync::Lazy::new(probe);
    match diagnose(&PROBE, privileged).into_iter().next() {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

/// `ISOTEST_SKIP_UNSUPPORTED` is set to something other than `0` or empty.
pub fn skip_unsupported() -> bool {
    std::env::var(ENV_SKIP_UNSUPPORTED).is_ok_and(|v| !v.is_empty() && v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(root: bool) -> Probe {
        Probe {
            release: "6.18.0".into(),
            kernel: (6, 18),
            root,
            user_namespaces: true,
            max_user_namespaces: Some(63000),
            unprivileged_userns_clone: None,
            apparmor_restrict_unprivileged_userns: None,
            overlay: true,
        }
    }

    fn only(p: &Probe, privileged: bool) -> Problem {
        let mut all = diagnose(p, privileged);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[test]
    fn a_good_machine_has_no_problems() {
        assert!(diagnose(&good(true), false).is_empty());
        assert!(diagnose(&good(false), false).is_empty());
        assert!(diagnose(&good(true), true).is_empty());
    }

    #[test]
    fn max_user_namespaces_zero() {
        let p = Probe {
            max_user_namespaces: Some(0),
            ..good(true)
        };
        let e = only(&p, false);
        assert!(e.what.contains("user.max_user_namespaces=0"));
        assert!(e.fix.contains("sysctl -w user.max_user_namespaces="));
    }

    #[test]
    fn debian_unprivileged_userns_clone() {
        let p = Probe {
            unprivileged_userns_clone: Some(0),
            ..good(false)
        };
        let e = only(&p, false);
        assert!(e.what.contains("kernel.unprivileged_userns_clone=0"));
        assert!(e.fix.contains("kernel.unprivileged_userns_clone=1"));
        // Root is not affected.
        let p = Probe { root: true, ..p };
        assert!(diagnose(&p, false).is_empty());
    }

    #[test]
    fn ubuntu_apparmor_restriction() {
        let p = Probe {
            apparmor_restrict_unprivileged_userns: Some(1),
            ..good(false)
        };
        let e = only(&p, false);
        assert!(e.what.contains("apparmor_restrict_unprivileged_userns=1"));
        assert!(e.fix.contains("apparmor_restrict_unprivileged_userns=0"));
        let p = Probe {
            apparmor_restrict_unprivileged_userns: Some(0),
            ..p
        };
        assert!(diagnose(&p, false).is_empty());
    }

    #[test]
    fn no_user_namespaces_in_the_kernel() {
        let p = Probe {
            user_namespaces: false,
            ..good(false)
        };
        assert!(only(&p, false).fix.contains("CONFIG_USER_NS"));
        // A privileged sandbox does not need them.
        let p = Probe { root: true, ..p };
        assert!(diagnose(&p, true).is_empty());
    }

    #[test]
    fn old_kernels_and_missing_overlayfs() {
        let p = Probe {
            kernel: (5, 10),
            ..good(true)
        };
        assert!(only(&p, false).what.contains("kernel 5.10 is too old"));
        let p = Probe {
            overlay: false,
            ..good(true)
        };
        assert!(only(&p, false).fix.contains("modprobe overlay"));
    }

    #[test]
    fn privileged_needs_root() {
        assert!(only(&good(false), true)
            .what
            .contains("privileged = true needs root"));
    }

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_kernel_release("6.6"), Some((6, 6)));
        assert_eq!(parse_kernel_release("garbage"), None);
    }

    #[test]
    fn this_machine_passes() {
        // The machines that run this suite support isotest; a failure here names the fix.
        if let Err(p) = check(false) {
            panic!("{}; {}", p.what, p.fix);
        }
    }
}
