//! Child side: applies a [`Plan`](crate::plan) in the freshly cloned child, execs, and — in the
//! re-executed test binary — finishes the pivot into the new root.
//!
//! Between `clone3` and `execve` the child is a copy of a multi-threaded process: it may only do
//! async-signal-safe work. Everything it touches ([`Prepared`]) is allocated before the clone;
//! the child only reads it and makes raw system calls.

use std::ffi::CString;
use std::os::fd::RawFd;

use crate::error::{Error, Result};
use crate::plan::Step;
use crate::sys::raw;

/// Messages on the channel between supervisor and child (one per SEQPACKET datagram).
pub mod msg {
    /// Child → supervisor: parent-death signal armed, waiting for the id maps.
    pub const READY: u8 = b'R';
    /// Supervisor → child: id maps written, go on.
    pub const GO: u8 = b'G';
    /// Child → supervisor: step N failed with errno E (`E`, errno as i32 LE, step as u32 LE).
    pub const STEP_FAILED: u8 = b'E';
    /// Child → supervisor: exec failed (`X`, errno as i32 LE).
    pub const EXEC_FAILED: u8 = b'X';
    /// Test → supervisor: the body is about to start; what was printed before is libtest's.
    pub const START: u8 = b'S';
    /// Supervisor → test: libtest's header is dropped, run the body.
    pub const STARTED: u8 = b'A';
    /// Test → supervisor: passed.
    pub const PASS: u8 = b'P';
    /// Test → supervisor: failed, followed by the message.
    pub const FAIL: u8 = b'F';
}

/// A plan step with every string as a C string, ready for the child.
#[derive(Debug)]
pub enum CStep {
    /// See [`Step::Mount`].
    Mount {
        /// Source.
        source: CString,
        /// Target.
        target: CString,
        /// File system type.
        fstype: Option<CString>,
        /// Flags.
        flags: libc::c_ulong,
        /// Options.
        data: Option<CString>,
    },
    /// See [`Step::Bind`].
    Bind {
        /// Source.
        source: CString,
        /// Target.
        target: CString,
        /// `MS_REC`.
        recursive: bool,
        /// Then read-only.
        readonly: bool,
        /// Skip a missing source.
        optional: bool,
    },
    /// See [`Step::Mkdir`].
    Mkdir(CString, libc::mode_t),
    /// See [`Step::Open`].
    Open(CString, RawFd),
    /// See [`Step::Touch`].
    Touch(CString),
    /// See [`Step::Symlink`].
    Symlink(CString, CString),
    /// See [`Step::Sysctl`].
    Sysctl(CString, CString),
    /// See [`Step::Mask`].
    Mask(CString),
    /// See [`Step::Lock`]: the uid map, the gid map and the helper's stack.
    Lock(CString, CString, crate::sys::HelperStack),
    /// See [`Step::Hostname`].
    Hostname(CString),
    /// See [`Step::LimitProcesses`].
    LimitProcesses(u64),
    /// See [`Step::LoopbackUp`].
    LoopbackUp,
    /// See [`Step::Pivot`].
    Pivot(CString),
    /// See [`Step::Chdir`].
    Chdir(CString),
    /// See [`Step::ControllingTerminal`].
    ControllingTerminal(RawFd),
}

fn c(s: &str) -> Result<CString> {
    crate::sys::cstring(s.as_bytes())
}

/// Converts the plan's steps into C strings.
pub fn compile(steps: &[Step]) -> Result<Vec<CStep>> {
    steps
        .iter()
        .map(|s| {
            Ok(match s {
                Step::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                } => CStep::Mount {
                    source: c(source)?,
                    target: c(target)?,
                    fstype: fstype.as_deref().map(c).transpose()?,
                    flags: *flags as libc::c_ulong,
                    data: data.as_deref().map(c).transpose()?,
                },
                Step::Bind {
                    source,
                    target,
                    recursive,
                    readonly,
                    optional,
                } => CStep::Bind {
                    source: c(source)?,
                    target: c(target)?,
                    recursive: *recursive,
                    readonly: *readonly,
                    optional: *optional,
                },
                Step::Mkdir { path, mode } => CStep::Mkdir(c(path)?, *mode as libc::mode_t),
                Step::Open { path, fd } => CStep::Open(c(path)?, *fd),
                Step::Touch { path } => CStep::Touch(c(path)?),
                Step::Symlink { target, link } => CStep::Symlink(c(target)?, c(link)?),
                Step::Sysctl { path, value } => CStep::Sysctl(c(path)?, c(value)?),
                Step::Mask { target } => CStep::Mask(c(target)?),
                Step::Lock { uid_map, gid_map } => {
                    // The helper's stack, allocated now: the child may not allocate.
                    CStep::Lock(c(uid_map)?, c(gid_map)?, crate::sys::HelperStack::new())
                }
                Step::Hostname(name) => CStep::Hostname(c(name)?),
                Step::LimitProcesses(max) => CStep::LimitProcesses(*max),
                Step::LoopbackUp => CStep::LoopbackUp,
                Step::Pivot(root) => CStep::Pivot(c(root)?),
                Step::Chdir(path) => CStep::Chdir(c(path)?),
                Step::ControllingTerminal(fd) => CStep::ControllingTerminal(*fd),
            })
        })
        .collect()
}

/// Applies one step. Async-signal-safe.
fn apply(step: &CStep) -> std::result::Result<(), i32> {
    match step {
        CStep::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => raw::mount(
            Some(source),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        CStep::Bind {
            source,
            target,
            recursive,
            readonly,
            optional,
        } => {
            let rec = if *recursive { libc::MS_REC } else { 0 };
            match raw::mount(Some(source), target, None, libc::MS_BIND | rec, None) {
                Err(libc::ENOENT) if *optional => return Ok(()),
                r => r?,
            }
            if *readonly {
                raw::mount_setattr(target, *recursive, raw::MOUNT_ATTR_RDONLY)?;
            }
            Ok(())
        }
        CStep::Mkdir(path, mode) => raw::mkdir(path, *mode),
        CStep::Open(path, fd) => raw::open_as(path, *fd),
        CStep::Touch(path) => raw::touch(path, 0o644),
        CStep::Symlink(target, link) => raw::symlink(target, link),
        CStep::Sysctl(path, value) => raw::write_to(path, value),
        CStep::Mask(target) => match raw::is_dir(target) {
            Err(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
            Ok(true) => raw::mount(
                Some(c"isotest-mask"),
                target,
                Some(c"tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"mode=0555"),
            ),
            Ok(false) => raw::mount(Some(c"/dev/null"), target, None, libc::MS_BIND, None),
        },
        CStep::Lock(uid_map, gid_map, stack) => lock_raw(uid_map, gid_map, stack),
        CStep::Hostname(name) => raw::sethostname(name),
        CStep::LimitProcesses(max) => raw::setrlimit(libc::RLIMIT_NPROC, *max),
        CStep::LoopbackUp => raw::loopback_up(),
        CStep::Pivot(root) => {
            // Enter the new root, so that "." names it.
            raw::chdir(root)?;
            // Stack the old root on top of the new one: put_old may be new_root itself.
            raw::pivot_root(c".", c".")?;
            // Detach the old root, now the top of "/"; what stays is the new root.
            raw::umount2(c".", libc::MNT_DETACH)?;
            // Leave no working directory in what was the old root.
            raw::chdir(c"/")
        }
        CStep::Chdir(path) => raw::chdir(path),
        // A new session without a terminal, then the pty slave becomes its terminal.
        CStep::ControllingTerminal(fd) => raw::setsid_tiocsctty(*fd),
    }
}

/// What the lock's helper needs: the pipe it waits on and the maps it writes.
struct LockHelper<'a> {
    go: RawFd,
    uid_map: &'a std::ffi::CStr,
    gid_map: &'a std::ffi::CStr,
}

/// The lock's helper: waits until its parent (PID 1) is in the nested user namespace, then
/// writes its maps from the outer one. Raw calls only (see [`raw::spawn_helper`]).
extern "C" fn lock_helper(arg: *mut libc::c_void) -> libc::c_int {
    // `arg` is the LockHelper that lock_raw keeps alive until this helper has exited.
    let h = crate::sys::deref_helper_arg(arg as *const LockHelper<'_>);
    let mut b = [0u8; 1];
    if raw::read(h.go, &mut b) != Ok(1) {
        return 1;
    }
    let ok = raw::write_to(c"/proc/1/uid_map", h.uid_map).is_ok()
        && raw::write_to(c"/proc/1/gid_map", h.gid_map).is_ok();
    if ok {
        0
    } else {
        2
    }
}

/// Locks the sandbox, async-signal-safe: moves this single-threaded process — PID 1 of the
/// sandbox, after the pivot — into a nested user, mount, UTS and IPC namespace whose id maps
/// (`uid_map`, `gid_map`) a helper in the outer namespace writes. See [`lock`].
fn lock_raw(
    uid_map: &std::ffi::CStr,
    gid_map: &std::ffi::CStr,
    stack: &crate::sys::HelperStack,
) -> std::result::Result<(), i32> {
    let (r, w) = raw::pipe()?;
    let args = LockHelper {
        go: r,
        uid_map,
        gid_map,
    };
    // A process cannot map ids in its own new user namespace beyond itself: the helper stays
    // in the outer one, where this process is root.
    let helper = raw::spawn_helper(lock_helper, &args as *const LockHelper<'_> as *mut _, stack);
    let helper = match helper {
        Ok(pid) => pid,
        Err(e) => {
            raw::close(r);
            raw::close(w);
            return Err(e);
        }
    };
    // The UTS and IPC namespaces move along, so the test's root keeps the powers it had over
    // them (the new UTS namespace copies the hostname). The network namespace stays: /sys,
    // locked, shows its devices; the plan opened its ports below 1024 and ICMP sockets to all.
    let unshared = raw::unshare(
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
    );
    // Let the helper go on either way, so it never waits forever.
    let _ = raw::write_all(w, b"g");
    raw::close(w);
    let status = raw::wait(helper);
    raw::close(r);
    unshared?;
    match status? {
        0 => Ok(()),
        _ => Err(libc::EPERM),
    }
}

/// What the child execs once the sandbox is built.
#[derive(Debug)]
pub struct ExecSpec {
    /// Exec this fd (`execveat`) when set, else `path` (`execve`).
    pub fd: Option<RawFd>,
    /// The program path for `execve` (and for messages).
    pub path: CString,
    /// Arguments and environment: owned here, read by the child through the pointer arrays.
    #[expect(
        dead_code,
        reason = "owns the strings argv_ptrs and envp_ptrs point into"
    )]
    strings: (Vec<CString>, Vec<CString>),
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

// The pointer arrays point into the heap buffers of `strings`, which the struct owns and never
// changes after construction (moving a CString does not move its buffer).
impl ExecSpec {
    /// Prepares the NULL-terminated pointer arrays.
    pub fn new(fd: Option<RawFd>, path: CString, argv: Vec<CString>, envp: Vec<CString>) -> Self {
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        ExecSpec {
            fd,
            path,
            strings: (argv, envp),
            argv_ptrs,
            envp_ptrs,
        }
    }
}

/// Everything the cloned child needs, prepared before the clone.
#[derive(Debug)]
pub struct Prepared {
    /// The child's end of the channel; stays open across exec when `keep_channel`.
    pub channel: RawFd,
    /// The supervisor's end, closed in the child.
    pub supervisor_channel: RawFd,
    /// Becomes the child's fd 0, 1, 2.
    pub stdio: [RawFd; 3],
    /// The steps.
    pub steps: Vec<CStep>,
    /// The exec.
    pub exec: ExecSpec,
    /// Keep the channel open in the exec'd program (a re-executed test reports over it).
    pub keep_channel: bool,
    /// Start a new session (no controlling terminal from the host).
    pub new_session: bool,
}

fn send(fd: RawFd, tag: u8, a: i32, b: u32) {
    let mut m = [0u8; 9];
    m[0] = tag;
    m[1..5].copy_from_slice(&a.to_le_bytes());
    m[5..9].copy_from_slice(&b.to_le_bytes());
    let _ = raw::write_all(fd, &m);
}

/// Where the cloned child starts: `arg` is the [`Prepared`] the supervisor keeps alive (in
/// `Spawned`) until the child has exec'd or exited.
pub extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    child_main(crate::sys::deref_helper_arg(arg as *const Prepared))
}

/// The cloned child's whole life: handshake, build the sandbox, exec. Never returns.
/// Async-signal-safe: only reads `p` and makes raw system calls.
pub fn child_main(p: &Prepared) -> ! {
    raw::close(p.supervisor_channel);
    // Die with the supervisor's thread. If it is already gone, the handshake below reads EOF.
    if raw::set_pdeathsig(libc::SIGKILL).is_err() {
        raw::exit(120);
    }
    let _ = raw::write_all(p.channel, &[msg::READY]);
    let mut go = [0u8; 1];
    match raw::read(p.channel, &mut go) {
        Ok(1) if go[0] == msg::GO => {}
        _ => raw::exit(121),
    }
    raw::reset_signals();
    let go_ns = if crate::trace::active() {
        crate::sys::monotonic_ns()
    } else {
        0
    };
    for (i, step) in p.steps.iter().enumerate() {
        if let Err(e) = apply(step) {
            send(p.channel, msg::STEP_FAILED, e, i as u32);
            raw::exit(122);
        }
    }
    if crate::trace::active() {
        let now = crate::sys::monotonic_ns();
        crate::trace::send(p.channel, &[("go_seen", go_ns), ("mounts", now)]);
    }
    if p.new_session {
        raw::setsid();
    }
    for (i, fd) in p.stdio.iter().enumerate() {
        if raw::dup2(*fd, i as RawFd).is_err() {
            raw::exit(123);
        }
    }
    // Nothing of the supervisor's beyond stdio (and the channel) reaches the sandbox.
    if raw::cloexec_from(3).is_err() {
        raw::exit(124);
    }
    if p.keep_channel && raw::keep_on_exec(p.channel).is_err() {
        raw::exit(125);
    }
    // Files the test or program creates are not group- or world-writable unless it asks, and
    // no exec in the sandbox gains privileges (setuid binaries, file capabilities).
    raw::umask(0o022);
    if raw::set_no_new_privs().is_err() {
        raw::exit(126);
    }
    let e = match p.exec.fd {
        Some(fd) => raw::execveat(fd, &p.exec.argv_ptrs, &p.exec.envp_ptrs),
        None => raw::execve(&p.exec.path, &p.exec.argv_ptrs, &p.exec.envp_ptrs),
    };
    send(p.channel, msg::EXEC_FAILED, e, 0);
    raw::exit(127)
}

/// In the re-executed test binary: moves into the new root and drops the old one.
pub fn finish_pivot() -> Result<()> {
    let step = Step::Pivot(crate::plan::NEW_ROOT.into());
    let compiled = compile(std::slice::from_ref(&step))?;
    apply(&compiled[0]).map_err(|e| Error::Sys {
        call: step.to_string(),
        errno: crate::error::Errno(e),
    })
}

/// Describes a failed step for the supervisor's error.
pub fn step_error(steps: &[Step], index: u32, errno: i32) -> Error {
    let call = steps
        .get(index as usize)
        .map_or_else(|| format!("setup step {index}"), ToString::to_string);
    Error::Sys {
        call,
        errno: crate::error::Errno(errno),
    }
}

/// Locks the sandbox: moves the (single-threaded) process into a nested user and mount
/// namespace. The kernel copies every mount into the new mount namespace as locked, because the
/// new user namespace is less privileged than the one that made them: the test's root can no
/// longer unmount, move or remount read-write what masks the host's kernel knobs (`/proc/sys`,
/// `/sys`), and a fresh procfs or sysfs mount is refused as too revealing. It may still mount
/// anything new.
///
/// A process cannot map ids in its own new user namespace beyond itself; a helper started
/// beforehand (sharing this process's memory, so nothing is copied) stays in the outer
/// namespace and writes the same maps the outer one has.
pub fn lock() -> Result<()> {
    let uid_map = crate::sys::cstring(outer_map("/proc/self/uid_map")?.as_bytes())?;
    let gid_map = crate::sys::cstring(outer_map("/proc/self/gid_map")?.as_bytes())?;
    lock_raw(&uid_map, &gid_map, &crate::sys::HelperStack::new()).map_err(|e| Error::Sys {
        call: "unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) with the id \
               maps of the outer namespace"
            .into(),
        errno: crate::error::Errno(e),
    })
}

/// The outer namespace's map, restated from inside it: every range it maps, identity.
fn outer_map(path: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        context: "reading",
        path: path.into(),
        source: e,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| format!("{} {} {}\n", f[0], f[0], f[2]))
        })
        .collect())
}
