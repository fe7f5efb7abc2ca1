//! Config → Plan: the ordered list of mount and pivot steps a sandbox is built from.
//!
//! Planning is pure (unit-tested without privileges); [`crate::sandbox`] applies the steps.
//! The sandbox is assembled under [`SCRATCH`], a tmpfs mounted in the child's own mount
//! namespace over the host's `/tmp` (shadowing it only there; whatever the child needs from
//! under it was opened before): `upper/` and `work/` hold the overlay's writable layer, so
//! nothing a test writes ever reaches the host disk, and `root/` is the new root.

use std::fmt;

/// Where the child mounts its scratch tmpfs. It exists on every Linux host.
pub const SCRATCH: &str = "/tmp";
/// The overlay's upper layer.
pub const UPPER: &str = "/tmp/upper";
/// The overlay's work directory.
pub const WORK: &str = "/tmp/work";
/// The new root, pivoted into before the test body runs.
pub const NEW_ROOT: &str = "/tmp/root";
/// A read-only bind of the lower layer, for the teardown checks to tell a created path from a
/// modified one.
pub const LOWER: &str = "/tmp/lower";
/// Where a kept upper layer's host directory is bound (see [`Input::keep`]).
pub const KEEP: &str = "/tmp/keep";

/// Mount flags, as in mount(2).
pub mod flags {
    /// `MS_RDONLY`.
    pub const RDONLY: u64 = libc::MS_RDONLY;
    /// `MS_NOSUID`.
    pub const NOSUID: u64 = libc::MS_NOSUID;
    /// `MS_NODEV`.
    pub const NODEV: u64 = libc::MS_NODEV;
    /// `MS_NOEXEC`.
    pub const NOEXEC: u64 = libc::MS_NOEXEC;
    /// `MS_REC | MS_PRIVATE`.
    pub const REC_PRIVATE: u64 = libc::MS_REC | libc::MS_PRIVATE;
}

/// One step of building a sandbox. Paths are absolute in the child's view before the pivot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        /// Source (the fs name for pseudo file systems).
        source: String,
        /// Mount point.
        target: String,
        /// File system type; `None` for a propagation change.
        fstype: Option<String>,
        /// `MS_*` flags.
        flags: u64,
        /// File-system-specific options.
        data: Option<String>,
    },
    /// A bind mount of `source` on `target`, made read-only when `readonly`.
    Bind {
        /// Host path (or `/proc/self/fd/N`).
        source: String,
        /// Mount point.
        target: String,
        /// Also bind the mounts below `source` (`MS_REC`).
        recursive: bool,
        /// Make the bind read-only.
        readonly: bool,
        /// A missing source is skipped (kernel files a config may leave out).
        optional: bool,
    },
    /// `mkdir(path, mode)` unless it exists.
    Mkdir {
        /// The directory.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// `open(path, O_PATH)` in the child's own mount namespace, as fd `fd` (a number the
    /// supervisor reserved). Mounts need paths of the child's namespace: an fd opened by the
    /// supervisor names the host's mounts, which overlayfs and bind mounts refuse.
    Open {
        /// The path, resolved before the scratch tmpfs can shadow it.
        path: String,
        /// The fd number it lands on.
        fd: i32,
    },
    /// Creates an empty file to bind a file onto.
    Touch {
        /// The file.
        path: String,
    },
    /// `symlink(target, link)`.
    Symlink {
        /// What the link points to.
        target: String,
        /// The link.
        link: String,
    },
    /// Writes `value` to the sysctl file `path`.
    Sysctl {
        /// The file under `/proc/sys`.
        path: String,
        /// What to write.
        value: String,
    },
    /// Masks a kernel file or directory: `/dev/null` bound over a file, an empty read-only
    /// tmpfs over a directory. A path this kernel does not have is skipped.
    Mask {
        /// The path to hide.
        target: String,
    },
    /// Locks the sandbox after the pivot in command mode: a helper forked first (still in
    /// this user namespace) writes `uid_map` and `gid_map` of a nested user namespace that the
    /// child then enters with a new mount, UTS and IPC namespace (see [`crate::sandbox::lock`]).
    Lock {
        /// The nested namespace's uid map.
        uid_map: String,
        /// The nested namespace's gid map.
        gid_map: String,
    },
    /// `sethostname(name)`.
    Hostname(String),
    /// `setrlimit(RLIMIT_NPROC, max)`, soft and hard.
    LimitProcesses(u64),
    /// Brings `lo` up.
    LoopbackUp,
    /// `chdir(new_root)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`, `chdir("/")`.
    Pivot(String),
    /// `chdir(path)`: the working directory the program starts in (after the pivot).
    Chdir(String),
    /// `setsid()`, `ioctl(fd, TIOCSCTTY, 0)`: the terminal on `fd` (a pty slave the supervisor
    /// opened) becomes the sandbox's controlling terminal.
    ControllingTerminal(i32),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => write!(
                f,
                "mount({source:?}, {target:?}, {:?}, {flags:#x}, {:?})",
                fstype.as_deref().unwrap_or(""),
                data.as_deref().unwrap_or("")
            ),
            Step::Bind {
                source,
                target,
                recursive,
                readonly,
                ..
            } => write!(
                f,
                "mount({source:?}, {target:?}, MS_BIND{}{})",
                if *recursive { "|MS_REC" } else { "" },
                if *readonly { ", then read-only" } else { "" }
            ),
            Step::Mkdir { path, mode } => write!(f, "mkdir({path:?}, {mode:#o})"),
            Step::Open { path, fd } => write!(f, "open({path:?}, O_PATH) as fd {fd}"),
            Step::Touch { path } => write!(f, "open({path:?}, O_CREAT)"),
            Step::Symlink { target, link } => write!(f, "symlink({target:?}, {link:?})"),
            Step::Sysctl { path, value } => write!(f, "write({path:?}, {value:?})"),
            Step::Mask { target } => write!(f, "mask({target:?})"),
            Step::Lock { .. } => write!(
                f,
                "unshare(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC) with id maps"
            ),
            Step::Hostname(name) => write!(f, "sethostname({name:?})"),
            Step::LimitProcesses(max) => write!(f, "setrlimit(RLIMIT_NPROC, {max})"),
            Step::LoopbackUp => write!(f, "ioctl(\"lo\", SIOCSIFFLAGS, IFF_UP)"),
            Step::Pivot(root) => write!(f, "pivot_root({root:?}, {root:?})"),
            Step::Chdir(path) => write!(f, "chdir({path:?})"),
            Step::ControllingTerminal(fd) => write!(f, "ioctl({fd}, TIOCSCTTY)"),
        }
    }
}

/// What a plan is computed from.
#[derive(Debug, Clone)]
pub struct Input {
    /// The lower layer (the root filesystem directory) on the host.
    pub lower: String,
    /// The fd number reserved for the lower layer in the child.
    pub lower_fd: i32,
    /// The sandbox's hostname.
    pub hostname: String,
    /// The child runs in a user namespace (overlay needs `userxattr`).
    pub userns: bool,
    /// How many gids from 0 up are mapped inside (devpts wants group `tty`, gid 5; ICMP
    /// sockets are opened to the mapped groups).
    pub mapped_gids: u32,
    /// The requested bind mounts.
    pub binds: Vec<BindInput>,
    /// A host directory (and the fd number reserved for it) that holds the overlay's upper
    /// and work dirs instead of the scratch tmpfs, so the writable layer outlives the sandbox.
    pub keep: Option<(String, i32)>,
    /// Leave `/proc/sys` writable (`proc_sys = "rw"`).
    pub proc_sys_writable: bool,
    /// The `size=` of the scratch tmpfs (the overlay's writable layer), `/tmp` and `/dev/shm`;
    /// `None` keeps the kernel's default, half of the RAM.
    pub tmpfs_size: Option<String>,
    /// `RLIMIT_NPROC` for the sandbox, `None` for none. In its own user namespace it counts
    /// only the sandbox's processes: the limit that holds where no pids cgroup can be made.
    pub nproc: Option<u64>,
}

/// One bind mount as the plan needs it.
#[derive(Debug, Clone)]
pub struct BindInput {
    /// The host path.
    pub source: String,
    /// The fd number reserved for the source in the child.
    pub fd: i32,
    /// The mount point inside the new root, symlinks already resolved within the root.
    pub destination: String,
    /// The source is a directory (else the mount point is a file).
    pub dir: bool,
    /// Read-only.
    pub readonly: bool,
}

/// The device nodes bound from the host into the sandbox's `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Settings of the sandbox's network namespace, for `mapped_gids` groups inside.
pub fn net_sysctls(mapped_gids: u32) -> [(&'static str, String); 2] {
    let last_gid = mapped_gids.saturating_sub(1).min(i32::MAX as u32);
    [
        ("net/ipv4/ip_unprivileged_port_start", "0".into()),
        ("net/ipv4/ping_group_range", format!("0 {last_gid}")),
    ]
}

/// Paths under `/proc` made read-only: kernel knobs a test must not reach (those of runc and
/// Docker). Missing ones are skipped.
pub const PROC_READONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// Kernel files and directories hidden from the sandbox, as the mainstream container runtimes
/// hide them: `/dev/null` over files, an empty read-only tmpfs over directories. Missing ones
/// are skipped.
pub const MASKED: [&str; 9] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// The directories of the root filesystem the sandbox mounts on. Each must be a directory or
/// absent (then made in the overlay's upper layer), never a symlink: the mount would follow it
/// out of the new root.
pub const MOUNT_POINTS: [&str; 4] = ["proc", "sys", "dev", "tmp"];

/// Checks that the root filesystem `root` (and, for a kept layer, its upper layer `upper`)
/// holds no symlink or file where the sandbox mounts. Runs before any fork.
pub fn check_mount_points(root: &std::path::Path) -> Result<(), String> {
    for dir in MOUNT_POINTS {
        let path = root.join(dir);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            return Err(format!(
                "/{dir} is a symlink to {}; the sandbox mounts on /{dir}, so it must be a \
                 directory or absent",
                target.display()
            ));
        }
        if !meta.is_dir() {
            return Err(format!(
                "/{dir} is not a directory; the sandbox mounts on /{dir}, so it must be a \
                 directory or absent"
            ));
        }
    }
    Ok(())
}

/// `mode=...` plus `size=...` when set.
fn tmpfs_data(mode: &str, size: Option<&str>) -> String {
    match size {
        Some(size) => format!("mode={mode},size={size}"),
        None => format!("mode={mode}"),
    }
}

/// Computes the steps that build the sandbox (everything up to, not including, the pivot).
pub fn plan(input: &Input) -> Vec<Step> {
    let mut steps = Vec::with_capacity(48);
    let root = |p: &str| format!("{NEW_ROOT}{p}");
    let mount =
        |source: &str, target: String, fstype: &str, flags: u64, data: Option<&str>| Step::Mount {
            source: source.into(),
            target,
            fstype: Some(fstype.into()),
            flags,
            data: data.map(Into::into),
        };
    use flags::*;

    // Nothing mounted from here on propagates back to the host.
    steps.push(Step::Mount {
        source: "none".into(),
        target: "/".into(),
        fstype: None,
        flags: REC_PRIVATE,
        data: None,
    });
    // Hold on to the lower layer and the bind sources before the scratch tmpfs can shadow
    // their paths.
    steps.push(Step::Open {
        path: input.lower.clone(),
        fd: input.lower_fd,
    });
    for bind in &input.binds {
        steps.push(Step::Open {
            path: bind.source.clone(),
            fd: bind.fd,
        });
    }
    if let Some((path, fd)) = &input.keep {
        steps.push(Step::Open {
            path: path.clone(),
            fd: *fd,
        });
    }
    // The scratch tmpfs: upper and work dirs of the overlay, and the new root's mount point.
    let size = input.tmpfs_size.as_deref();
    steps.push(mount(
        "isotest",
        SCRATCH.into(),
        "tmpfs",
        NOSUID | NODEV,
        Some(&tmpfs_data("0755", size)),
    ));
    let (upper, work) = match &input.keep {
        None => (UPPER.to_string(), WORK.to_string()),
        Some((_, fd)) => {
            // The kept layer: upper and work must share a file system, so both live in the
            // host directory, bound here.
            steps.push(Step::Mkdir {
                path: KEEP.into(),
                mode: 0o755,
            });
            steps.push(Step::Bind {
                source: format!("/proc/self/fd/{fd}"),
                target: KEEP.into(),
                recursive: false,
                readonly: false,
                optional: false,
            });
            (format!("{KEEP}/upper"), format!("{KEEP}/work"))
        }
    };
    for dir in [upper.as_str(), work.as_str(), NEW_ROOT, LOWER] {
        steps.push(Step::Mkdir {
            path: dir.into(),
            mode: 0o755,
        });
    }
    steps.push(Step::Bind {
        source: format!("/proc/self/fd/{}", input.lower_fd),
        target: LOWER.into(),
        recursive: false,
        readonly: true,
        optional: false,
    });
    let mut overlay = format!(
        "lowerdir=/proc/self/fd/{},upperdir={upper},workdir={work}",
        input.lower_fd
    );
    if input.userns {
        overlay.push_str(",userxattr");
    }
    steps.push(mount(
        "overlay",
        NEW_ROOT.into(),
        "overlay",
        0,
        Some(&overlay),
    ));

    // /proc: the sandbox's own processes; kernel knobs read-only.
    steps.push(Step::Mkdir {
        path: root("/proc"),
        mode: 0o555,
    });
    steps.push(mount(
        "proc",
        root("/proc"),
        "proc",
        NOSUID | NODEV | NOEXEC,
        None,
    ));
    // The sandbox's own network namespace: its root may bind any port and ping, even once the
    // locked nested user namespace no longer owns the network namespace.
    for (knob, value) in net_sysctls(input.mapped_gids) {
        steps.push(Step::Sysctl {
            path: root(&format!("/proc/sys/{knob}")),
            value,
        });
    }
    for p in PROC_READONLY {
        if p == "sys" && input.proc_sys_writable {
            continue;
        }
        let target = root(&format!("/proc/{p}"));
        steps.push(Step::Bind {
            source: target.clone(),
            target,
            recursive: true,
            readonly: true,
            optional: true,
        });
    }

    // /sys: read-only sysfs of the sandbox's network namespace.
    steps.push(Step::Mkdir {
        path: root("/sys"),
        mode: 0o555,
    });
    steps.push(mount(
        "sysfs",
        root("/sys"),
        "sysfs",
        RDONLY | NOSUID | NODEV | NOEXEC,
        None,
    ));
    for path in MASKED {
        steps.push(Step::Mask { target: root(path) });
    }

    // /dev: a tmpfs with the harmless devices bound from the host (mknod is not allowed in a
    // user namespace), its own devpts, shm and the usual links.
    steps.push(Step::Mkdir {
        path: root("/dev"),
        mode: 0o755,
    });
    steps.push(mount(
        "tmpfs",
        root("/dev"),
        "tmpfs",
        NOSUID | NOEXEC,
        Some("mode=0755"),
    ));
    for dev in DEVICES {
        let target = root(&format!("/dev/{dev}"));
        steps.push(Step::Touch {
            path: target.clone(),
        });
        steps.push(Step::Bind {
            source: format!("/dev/{dev}"),
            target,
            recursive: false,
            readonly: false,
            optional: false,
        });
    }
    steps.push(Step::Mkdir {
        path: root("/dev/pts"),
        mode: 0o755,
    });
    let pts = if input.mapped_gids > 5 {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        "newinstance,ptmxmode=0666,mode=0620"
    };
    steps.push(mount(
        "devpts",
        root("/dev/pts"),
        "devpts",
        NOSUID | NOEXEC,
        Some(pts),
    ));
    steps.push(Step::Symlink {
        target: "pts/ptmx".into(),
        link: root("/dev/ptmx"),
    });
    steps.push(Step::Mkdir {
        path: root("/dev/shm"),
        mode: 0o1777,
    });
    steps.push(mount(
        "shm",
        root("/dev/shm"),
        "tmpfs",
        NOSUID | NODEV,
        Some(&tmpfs_data("1777", size)),
    ));
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            target: target.into(),
            link: root(&format!("/dev/{link}")),
        });
    }

    // /tmp: fresh and empty.
    steps.push(Step::Mkdir {
        path: root("/tmp"),
        mode: 0o1777,
    });
    steps.push(mount(
        "tmpfs",
        root("/tmp"),
        "tmpfs",
        NOSUID | NODEV,
        Some(&tmpfs_data("1777", size)),
    ));

    // Bind mounts, last so that they may land on any of the above. The mount point and the
    // directories above it are made as needed: the destination is resolved already, so no
    // symlink is followed out of the root. Never recursive: the source was opened before the
    // scratch tmpfs, but a recursive bind would copy what is mounted on it since (a source of
    // `/tmp` or `/` would bring the scratch along), so mounts below a source are not included.
    for bind in &input.binds {
        let mut path = String::from(NEW_ROOT);
        let parts: Vec<&str> = bind
            .destination
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        for (i, part) in parts.iter().enumerate() {
            path.push('/');
            path.push_str(part);
            if i + 1 < parts.len() || bind.dir {
                steps.push(Step::Mkdir {
                    path: path.clone(),
                    mode: 0o755,
                });
            } else {
                steps.push(Step::Touch { path: path.clone() });
            }
        }
        steps.push(Step::Bind {
            source: format!("/proc/self/fd/{}", bind.fd),
            target: path,
            recursive: false,
            readonly: bind.readonly,
            optional: false,
        });
    }

    steps.push(Step::Hostname(input.hostname.clone()));
    steps.push(Step::LoopbackUp);
    if let Some(max) = input.nproc {
        steps.push(Step::LimitProcesses(max));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(userns: bool) -> Input {
        Input {
            lower: "/srv/rootfs".into(),
            lower_fd: 7,
            hostname: "web1".into(),
            userns,
            mapped_gids: u32::MAX,
            binds: Vec::new(),
            keep: None,
            proc_sys_writable: false,
            tmpfs_size: None,
            nproc: None,
        }
    }

    fn targets(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Mount { target, .. } | Step::Bind { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn starts_private_then_scratch_then_overlay() {
        let steps = plan(&input(true));
        assert!(
            matches!(&steps[0], Step::Mount { target, flags, fstype: None, .. }
            if target == "/" && *flags == flags::REC_PRIVATE)
        );
        assert_eq!(
            steps[1],
            Step::Open {
                path: "/srv/rootfs".into(),
                fd: 7
            }
        );
        assert!(
            matches!(&steps[2], Step::Mount { target, fstype: Some(t), .. }
            if target == SCRATCH && t == "tmpfs")
        );
        let overlay = steps
            .iter()
            .find_map(|s| match s {
                Step::Mount {
                    fstype: Some(t),
                    data,
                    ..
                } if t == "overlay" => data.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            overlay,
            "lowerdir=/proc/self/fd/7,upperdir=/tmp/upper,workdir=/tmp/work,userxattr"
        );
    }

    #[test]
    fn no_userxattr_without_user_namespace() {
        let steps = plan(&input(false));
        assert!(!steps.iter().any(|s| s.to_string().contains("userxattr")));
    }

    #[test]
    fn every_mount_lands_inside_the_new_root_after_the_scratch() {
        let steps = plan(&input(true));
        let t = targets(&steps);
        assert_eq!(t[0], "/");
        assert_eq!(t[1], SCRATCH);
        for target in &t[2..] {
            assert!(
                target.starts_with(NEW_ROOT) || target == LOWER,
                "{target} outside the new root"
            );
        }
        for want in [
            "/proc",
            "/sys",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/tmp",
            "/dev/null",
        ] {
            assert!(
                t.contains(&format!("{NEW_ROOT}{want}")),
                "{want} not mounted"
            );
        }
    }

    #[test]
    fn kernel_knobs_are_read_only() {
        let steps = plan(&input(true));
        for p in ["/proc/sys", "/proc/sysrq-trigger"] {
            let target = format!("{NEW_ROOT}{p}");
            assert!(steps.iter().any(
                |s| matches!(s, Step::Bind { target: t, readonly: true, .. } if *t == target)
            ));
        }
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Mount { fstype: Some(t), flags, .. }
            if t == "sysfs" && flags & flags::RDONLY != 0)));
    }

    #[test]
    fn kernel_files_are_masked_and_proc_sys_may_stay_writable() {
        let steps = plan(&input(true));
        for p in MASKED {
            let target = format!("{NEW_ROOT}{p}");
            assert!(steps.contains(&Step::Mask { target }), "{p} not masked");
        }
        for p in ["bus", "fs", "irq"] {
            let target = format!("{NEW_ROOT}/proc/{p}");
            assert!(steps.iter().any(
                |s| matches!(s, Step::Bind { target: t, readonly: true, optional: true, .. } if *t == target)
            ));
        }
        let mut i = input(true);
        i.proc_sys_writable = true;
        let sys = format!("{NEW_ROOT}/proc/sys");
        assert!(!plan(&i)
            .iter()
            .any(|s| matches!(s, Step::Bind { target, .. } if *target == sys)));
    }

    #[test]
    fn tmpfs_size_limits_the_scratch_tmp_and_shm() {
        let mut i = input(true);
        i.tmpfs_size = Some("64m".into());
        let sized: Vec<String> = plan(&i)
            .iter()
            .filter_map(|s| match s {
                Step::Mount {
                    target,
                    data: Some(d),
                    ..
                } if d.contains("size=64m") => Some(target.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(sized, [SCRATCH, "/tmp/root/dev/shm", "/tmp/root/tmp"]);
        assert!(!plan(&input(true))
            .iter()
            .any(|s| s.to_string().contains("size=")));
    }

    #[test]
    fn symlinked_mount_points_are_refused() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(check_mount_points(root.path()), Ok(()));
        std::fs::create_dir(root.path().join("proc")).unwrap();
        assert_eq!(check_mount_points(root.path()), Ok(()));
        std::os::unix::fs::symlink("/host-marker", root.path().join("dev")).unwrap();
        let e = check_mount_points(root.path()).unwrap_err();
        assert!(e.contains("/dev is a symlink to /host-marker"), "{e}");
        std::fs::remove_file(root.path().join("dev")).unwrap();
        std::fs::write(root.path().join("tmp"), "").unwrap();
        assert!(check_mount_points(root.path())
            .unwrap_err()
            .contains("/tmp is not a directory"));
    }

    #[test]
    fn devpts_group_only_when_mapped() {
        let mut i = input(true);
        i.mapped_gids = 1;
        assert!(!plan(&i).iter().any(|s| s.to_string().contains("gid=5")));
        assert!(plan(&input(true))
            .iter()
            .any(|s| s.to_string().contains("gid=5")));
    }

    #[test]
    fn ends_with_hostname_and_loopback() {
        let steps = plan(&input(true));
        let n = steps.len();
        assert_eq!(steps[n - 2], Step::Hostname("web1".into()));
        assert_eq!(steps[n - 1], Step::LoopbackUp);
    }

    #[test]
    fn lower_layer_is_kept_read_only_for_teardown() {
        let steps = plan(&input(true));
        assert!(steps.iter().any(
            |s| matches!(s, Step::Bind { source, target, readonly: true, .. }
            if source == "/proc/self/fd/7" && target == LOWER)
        ));
    }

    #[test]
    fn binds_open_early_and_mount_last() {
        let mut i = input(true);
        i.binds = vec![
            BindInput {
                source: "/srv/data".into(),
                fd: 9,
                destination: "/data/sub".into(),
                dir: true,
                readonly: true,
            },
            BindInput {
                source: "/run/x.sock".into(),
                fd: 10,
                destination: "/run/x.sock".into(),
                dir: false,
                readonly: false,
            },
        ];
        let steps = plan(&i);
        let scratch = steps
            .iter()
            .position(|s| matches!(s, Step::Mount { target, .. } if target == SCRATCH))
            .unwrap();
        let open = steps
            .iter()
            .position(|s| matches!(s, Step::Open { fd: 9, path } if path == "/srv/data"))
            .unwrap();
        assert!(
            open < scratch,
            "the source is opened before /tmp is shadowed"
        );
        let tail: Vec<String> = steps[steps.len() - 8..]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            tail,
            [
                "mkdir(\"/tmp/root/data\", 0o755)",
                "mkdir(\"/tmp/root/data/sub\", 0o755)",
                "mount(\"/proc/self/fd/9\", \"/tmp/root/data/sub\", MS_BIND, then read-only)",
                "mkdir(\"/tmp/root/run\", 0o755)",
                "open(\"/tmp/root/run/x.sock\", O_CREAT)",
                "mount(\"/proc/self/fd/10\", \"/tmp/root/run/x.sock\", MS_BIND)",
                "sethostname(\"web1\")",
                "ioctl(\"lo\", SIOCSIFFLAGS, IFF_UP)",
            ]
        );
    }

    #[test]
    fn steps_describe_themselves_like_the_call() {
        let s = Step::Bind {
            source: "/dev/null".into(),
            target: "/tmp/root/dev/null".into(),
            recursive: false,
            readonly: false,
            optional: false,
        };
        assert_eq!(
            s.to_string(),
            "mount(\"/dev/null\", \"/tmp/root/dev/null\", MS_BIND)"
        );
    }
}
