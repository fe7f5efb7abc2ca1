//! The only module that calls into the kernel for namespaces, mounts and processes, and the
//! only one with `unsafe`. Every wrapper is named after its system call.
//!
//! Functions here fall in two groups:
//! - `raw_*` functions run in the freshly cloned child, between `clone3` and `execve`, where only
//!   async-signal-safe work is allowed: they take pointers prepared before the clone, never
//!   allocate, and return the errno on failure.
//! - the others run on the host side (the supervisor) or in the re-executed test, may allocate,
//!   and turn a failure into [`Error::Sys`] naming the call and its arguments.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::error::{Errno, Error, Result};

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Builds the error for a failed call from the current errno.
fn fail(call: impl Into<String>) -> Error {
    Error::Sys {
        call: call.into(),
        errno: Errno(errno()),
    }
}

/// `clone(flags | CLONE_VM | CLONE_PIDFD | SIGCHLD)`: starts `child(arg)` in a new process in
/// new namespaces that shares this process's memory (so nothing is copied: no page tables, no
/// copy-on-write faults afterwards) and runs on `stack`. Returns the child's pid and a pidfd.
///
/// `child` must never return and must keep to async-signal-safe work (the [`raw`] functions:
/// no allocation, no locks) until it execs or exits: it runs beside the other threads of this
/// process, in the same memory, with the calling thread's thread-local storage (a failing call
/// in both at once could mix up their `errno`s). `arg` and `stack` must stay alive and unmoved
/// until the child has exec'd or exited (exec gives it memory of its own).
pub fn clone_vm(
    flags: libc::c_int,
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
    stack: &mut [u8],
) -> Result<(libc::pid_t, OwnedFd)> {
    let mut pidfd: RawFd = -1;
    // SAFETY: the stack grows down from its 16-byte aligned top; the caller keeps `arg` and
    // `stack` alive until the child execs or exits, and `child` keeps to raw calls. With
    // CLONE_PIDFD, clone(2) stores the pidfd through the parent_tid pointer.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            child,
            top.cast(),
            flags | libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD,
            arg,
            &mut pidfd as *mut RawFd,
        )
    };
    if pid < 0 {
        return Err(fail(format!("clone(flags={flags:#x})")));
    }
    // SAFETY: the kernel stored a new pidfd that nothing else owns.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: fds is a valid out-array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(fail("socketpair(AF_UNIX, SOCK_SEQPACKET)"));
    }
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: fds is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(fail("pipe2(O_CLOEXEC)"));
    }
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `open(path, O_PATH | O_CLOEXEC | extra)`.
pub fn open_path(path: &Path, extra: libc::c_int) -> Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: c is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC | extra) };
    if fd < 0 {
        return Err(fail(format!("open({:?}, O_PATH)", path)));
    }
    // SAFETY: fd is new.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open(path, flags | O_CLOEXEC)`.
pub fn open(path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: c is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(fail(format!("open({:?})", path)));
    }
    // SAFETY: fd is new.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A C string from bytes, or an error naming the value with the NUL.
pub fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::InvalidOption {
        option: "path",
        value: String::from_utf8_lossy(bytes).into_owned(),
        problem: "contains a NUL byte".into(),
    })
}

/// `pidfd_send_signal(pidfd, sig)`.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: libc::c_int) -> Result<()> {
    // SAFETY: a valid pidfd; null info and zero flags as documented.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 && errno() != libc::ESRCH {
        return Err(fail(format!("pidfd_send_signal({sig})")));
    }
    Ok(())
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s} ({})", signal_name(*s)),
        }
    }
}

/// The name of a signal number (`SIGKILL`).
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGSYS => "SIGSYS",
        libc::SIGWINCH => "SIGWINCH",
        _ => "unknown signal",
    }
}

/// `waitid(P_PIDFD, pidfd, WEXITED)`: reaps the child.
pub fn waitid_pidfd(pidfd: &OwnedFd) -> Result<Exit> {
    loop {
        // SAFETY: zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pidfd and out-pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if r != 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(fail("waitid(P_PIDFD, WEXITED)"));
        }
        // SAFETY: waitid filled in a SIGCHLD siginfo.
        let status = unsafe { info.si_status() };
        return Ok(match info.si_code {
            libc::CLD_EXITED => Exit::Code(status),
            _ => Exit::Signal(status),
        });
    }
}

/// `poll(fds, timeout_ms)`, retried on EINTR. Returns the number of ready fds.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> Result<usize> {
    loop {
        // SAFETY: fds is a valid slice of pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        if errno() != libc::EINTR {
            return Err(fail("poll"));
        }
    }
}

/// `read(fd, buf)`, retried on EINTR; `Ok(0)` at end of file, `Err(EAGAIN)` when empty and
/// non-blocking.
pub fn read(fd: RawFd, buf: &mut [u8]) -> std::result::Result<usize, i32> {
    loop {
        // SAFETY: buf is valid for writes of its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// `write` of the whole buffer, retried on EINTR and short writes.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> std::result::Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for reads of its length.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = &buf[r as usize..];
    }
    Ok(())
}

/// `fcntl(fd, F_SETFL, O_NONBLOCK)`.
pub fn set_nonblocking(fd: RawFd) -> Result<()> {
    // SAFETY: plain fcntl on an fd we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(fail(format!("fcntl({fd}, F_SETFL, O_NONBLOCK)")));
    }
    Ok(())
}

/// Writes `content` to a file that already exists (an id map, `setgroups`).
pub fn write_file(path: &str, content: &str) -> Result<()> {
    std::fs::write(path, content).map_err(|e| Error::Sys {
        call: format!("write({path:?}, {:?})", content.trim_end()),
        errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
    })
}

/// `_exit(code)`: ends the process without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// `getuid()` and `getgid()`.
pub fn ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// The async-signal-safe system calls the cloned child makes before it execs. None of these
/// allocate; all pointers come from values prepared before the clone. Each returns the errno.
pub mod raw {
    use super::*;

    type R = std::result::Result<(), i32>;

    fn check(r: libc::c_long) -> R {
        if r < 0 {
            Err(super::errno())
        } else {
            Ok(())
        }
    }

    fn opt(p: Option<&CStr>) -> *const libc::c_char {
        p.map_or(std::ptr::null(), CStr::as_ptr)
    }

    /// `prctl(PR_SET_PDEATHSIG, sig)`.
    pub fn set_pdeathsig(sig: libc::c_int) -> R {
        // SAFETY: plain prctl.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } as _)
    }

    /// `mount(source, target, fstype, flags, data)`.
    pub fn mount(
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> R {
        // SAFETY: all pointers are NUL-terminated strings or null.
        check(unsafe {
            libc::mount(
                opt(source),
                target.as_ptr(),
                opt(fstype),
                flags,
                opt(data).cast(),
            )
        } as _)
    }

    /// The attributes argument of `mount_setattr(2)`.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }

    /// `MOUNT_ATTR_RDONLY`.
    pub const MOUNT_ATTR_RDONLY: u64 = 0x1;

    /// `mount_setattr(AT_FDCWD, path, AT_RECURSIVE?, {attr_set})`: sets only the given flags,
    /// keeping every other (and any locked) flag as it is.
    pub fn mount_setattr(path: &CStr, recursive: bool, attr_set: u64) -> R {
        let attr = MountAttr {
            attr_set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
        // SAFETY: valid path and attr struct of the size passed.
        check(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path.as_ptr(),
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        })
    }

    /// `mkdir(path, mode)`; an existing directory is not an error.
    pub fn mkdir(path: &CStr, mode: libc::mode_t) -> R {
        // SAFETY: valid C string.
        if unsafe { libc::mkdir(path.as_ptr(), mode) } == 0 {
            return Ok(());
        }
        let e = super::errno();
        if e == libc::EEXIST {
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            // SAFETY: valid path and out-pointer.
            if unsafe { libc::lstat(path.as_ptr(), st.as_mut_ptr()) } == 0 {
                // SAFETY: lstat succeeded, so st is initialised.
                let st = unsafe { st.assume_init() };
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Ok(());
                }
                return Err(libc::ENOTDIR);
            }
        }
        Err(e)
    }

    /// `open(path, O_PATH | O_CLOEXEC)`, moved onto fd number `fd`.
    pub fn open_as(path: &CStr, fd: RawFd) -> R {
        // SAFETY: valid C string.
        let new = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if new < 0 {
            return Err(super::errno());
        }
        // SAFETY: both fds belong to this process; dup3 replaces the reserved one.
        let r = unsafe { libc::dup3(new, fd, libc::O_CLOEXEC) };
        let e = super::errno();
        // SAFETY: new was opened above.
        unsafe { libc::close(new) };
        if r < 0 {
            Err(e)
        } else {
            Ok(())
        }
    }

    /// Creates an empty regular file (a bind-mount target); an existing one is kept.
    pub fn touch(path: &CStr, mode: libc::mode_t) -> R {
        // SAFETY: valid C string; O_NOFOLLOW keeps a planted symlink from being followed.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(super::errno());
        }
        // SAFETY: fd was just opened.
        unsafe { libc::close(fd) };
        Ok(())
    }

    /// `symlink(target, link)`; an existing link is replaced.
    pub fn symlink(target: &CStr, link: &CStr) -> R {
        // SAFETY: valid C strings.
        if unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } == 0 {
            return Ok(());
        }
        let e = super::errno();
        if e != libc::EEXIST {
            return Err(e);
        }
        // SAFETY: valid C strings.
        unsafe { libc::unlink(link.as_ptr()) };
        // SAFETY: valid C strings.
        check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } as _)
    }

    /// `open(path, O_WRONLY)` and `write(value)`: sets a sysctl.
    pub fn write_to(path: &CStr, value: &CStr) -> R {
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(super::errno());
        }
        let r = write_all(fd, value.to_bytes());
        close(fd);
        r
    }

    /// `setrlimit(resource, {max, max})`.
    pub fn setrlimit(resource: libc::__rlimit_resource_t, max: u64) -> R {
        let limit = libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        };
        // SAFETY: a valid rlimit.
        check(unsafe { libc::setrlimit(resource, &limit) } as _)
    }

    /// `sethostname(name)`.
    pub fn sethostname(name: &CStr) -> R {
        let bytes = name.to_bytes();
        // SAFETY: pointer and length describe the name.
        check(unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) } as _)
    }

    /// Brings the loopback interface up: `ioctl(SIOCGIFFLAGS)` then `ioctl(SIOCSIFFLAGS, IFF_UP)`.
    pub fn loopback_up() -> R {
        // SAFETY: plain socket call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(super::errno());
        }
        // SAFETY: a zeroed ifreq is valid; the name fits in IFNAMSIZ.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: valid socket and ifreq.
        let mut r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
        if r == 0 {
            // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
            unsafe {
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            }
            // SAFETY: valid socket and ifreq.
            r = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) };
        }
        let e = super::errno();
        // SAFETY: fd was opened above.
        unsafe { libc::close(fd) };
        if r != 0 {
            Err(e)
        } else {
            Ok(())
        }
    }

    /// `chdir(path)`.
    pub fn chdir(path: &CStr) -> R {
        // SAFETY: valid C string.
        check(unsafe { libc::chdir(path.as_ptr()) } as _)
    }

    /// `pivot_root(new_root, put_old)`.
    pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> R {
        // SAFETY: valid C strings.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
    }

    /// `umount2(target, flags)`.
    pub fn umount2(target: &CStr, flags: libc::c_int) -> R {
        // SAFETY: valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) } as _)
    }

    /// `read(fd, buf)`, retried on EINTR.
    pub fn read(fd: RawFd, buf: &mut [u8]) -> std::result::Result<usize, i32> {
        super::read(fd, buf)
    }

    /// `write(fd, buf)` of the whole buffer.
    pub fn write_all(fd: RawFd, buf: &[u8]) -> R {
        super::write_all(fd, buf)
    }

    /// `close(fd)`.
    pub fn close(fd: RawFd) {
        // SAFETY: closing an fd this process owns; errors are irrelevant here.
        unsafe { libc::close(fd) };
    }

    /// `dup2(from, to)`, clearing close-on-exec on `to`.
    pub fn dup2(from: RawFd, to: RawFd) -> R {
        if from == to {
            // SAFETY: plain fcntl.
            return check(unsafe { libc::fcntl(to, libc::F_SETFD, 0) } as _);
        }
        // SAFETY: plain dup2.
        check(unsafe { libc::dup2(from, to) } as _)
    }

    /// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: every fd from `first` up closes on exec.
    pub fn cloexec_from(first: RawFd) -> R {
        // SAFETY: plain syscall.
        check(unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        })
    }

    /// `fcntl(fd, F_SETFD, 0)`: keeps `fd` open across exec.
    pub fn keep_on_exec(fd: RawFd) -> R {
        // SAFETY: plain fcntl.
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } as _)
    }

    /// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`; returns only on failure.
    pub fn execveat(fd: RawFd, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> i32 {
        // SAFETY: argv and envp are NULL-terminated arrays of valid C strings.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        super::errno()
    }

    /// `execve(path, argv, envp)`; returns only on failure.
    pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> i32 {
        // SAFETY: argv and envp are NULL-terminated arrays of valid C strings.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        super::errno()
    }

    /// Restores default signal dispositions and an empty signal mask: Rust ignores SIGPIPE,
    /// and exec keeps ignored signals ignored.
    pub fn reset_signals() {
        // SAFETY: sigemptyset, sigprocmask and signal are async-signal-safe; SIG_DFL is valid.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }

    /// `setsid()`, then `ioctl(fd, TIOCSCTTY, 0)`: `fd` (a terminal) becomes the controlling
    /// terminal of the new session.
    pub fn setsid_tiocsctty(fd: RawFd) -> R {
        // SAFETY: plain syscalls; setsid fails harmlessly when already a session leader.
        unsafe { libc::setsid() };
        // SAFETY: TIOCSCTTY takes an int argument.
        check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as _)
    }

    /// `setsid()`.
    pub fn setsid() {
        // SAFETY: plain syscall; failure (already a leader) is harmless.
        unsafe { libc::setsid() };
    }

    /// `_exit(code)`.
    pub fn exit(code: i32) -> ! {
        super::exit_now(code)
    }

    /// `umask(mask)`.
    pub fn umask(mask: libc::mode_t) {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask) };
    }

    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: exec never grants privileges again (setuid bits and
    /// file capabilities are ignored), for this process and everything it starts.
    pub fn set_no_new_privs() -> R {
        // SAFETY: plain prctl.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as _)
    }

    /// `lstat(path)`: whether `path` is a directory.
    pub fn is_dir(path: &CStr) -> std::result::Result<bool, i32> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid path and out-pointer.
        if unsafe { libc::lstat(path.as_ptr(), st.as_mut_ptr()) } != 0 {
            return Err(super::errno());
        }
        // SAFETY: lstat succeeded, so st is initialised.
        Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }

    /// `pipe2(O_CLOEXEC)`: (read end, write end).
    pub fn pipe() -> std::result::Result<(RawFd, RawFd), i32> {
        let mut fds = [-1; 2];
        // SAFETY: fds has room for the two fds.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as _)?;
        Ok((fds[0], fds[1]))
    }

    /// `clone(CLONE_VM | SIGCHLD)`: starts `f(arg)` in a new process that shares this one's
    /// memory, on `stack`, and returns its pid. Nothing is copied, so it costs a fraction of
    /// fork(2). `f` must only make raw system calls (no allocation, no locks): it runs beside
    /// its parent in the same memory, with the parent's thread-local storage (a failing call in
    /// both at once could mix up their `errno`s). `arg` and `stack` must outlive the helper.
    pub fn spawn_helper(
        f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
        arg: *mut libc::c_void,
        stack: &super::HelperStack,
    ) -> std::result::Result<libc::pid_t, i32> {
        // SAFETY: the stack is the helper's alone while it runs (its owner waits for it); `f`
        // keeps to raw calls, as documented.
        let pid = unsafe { libc::clone(f, stack.top(), libc::CLONE_VM | libc::SIGCHLD, arg) };
        if pid < 0 {
            Err(super::errno())
        } else {
            Ok(pid)
        }
    }

    /// `unshare(flags)`.
    pub fn unshare(flags: libc::c_int) -> R {
        // SAFETY: plain syscall.
        check(unsafe { libc::unshare(flags) } as _)
    }

    /// `wait4(pid, &status, 0)`: the exit code (or 128 + the signal).
    pub fn wait(pid: libc::pid_t) -> std::result::Result<i32, i32> {
        let mut status = 0;
        loop {
            // SAFETY: valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            let e = super::errno();
            if e != libc::EINTR {
                return Err(e);
            }
        }
        Ok(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }
}

/// `fcntl(fd, F_SETFD, FD_CLOEXEC)`.
pub fn set_cloexec(fd: RawFd) -> Result<()> {
    // SAFETY: plain fcntl.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(fail(format!("fcntl({fd}, F_SETFD, FD_CLOEXEC)")));
    }
    Ok(())
}

/// `lgetxattr(path, name)`: the attribute's value, or `None` when the file does not have it.
pub fn lgetxattr(path: &Path, name: &CStr) -> Result<Option<Vec<u8>>> {
    let c = cstring(path.as_os_str().as_encoded_bytes())?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid C strings; buf is valid for writes of its length.
        let r = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        match errno() {
            libc::ENODATA | libc::ENOTSUP => return Ok(None),
            libc::ERANGE => buf.resize(buf.len() * 4, 0),
            _ => return Err(fail(format!("lgetxattr({path:?}, {name:?})"))),
        }
    }
}

/// Takes ownership of an fd this process inherited for a known purpose.
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass an fd inherited across exec for exactly this use, owned by nothing
    // else in this process.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Runs [`crate::test::pre_main`] before `main`, while the process is single-threaded.
#[used]
#[link_section = ".init_array"]
static PRE_MAIN: extern "C" fn() = pre_main;

extern "C" fn pre_main() {
    // A panic must not unwind into the C runtime.
    if std::panic::catch_unwind(crate::test::pre_main).is_err() {
        exit_now(101);
    }
}

/// Keeps the object file holding [`PRE_MAIN`] in every binary that runs a sandboxed test.
pub fn keep_pre_main() {
    std::hint::black_box(&PRE_MAIN);
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 0)`: a new fd for the same open file.
pub fn dup(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: plain fcntl; the new fd is owned by nobody else.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(fail(format!("fcntl({fd}, F_DUPFD_CLOEXEC)")));
    }
    // SAFETY: new is a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `isatty(fd)`.
pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: plain libc call on an fd number.
    unsafe { libc::isatty(fd) == 1 }
}

/// `posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)`: a new pseudo-terminal master.
pub fn posix_openpt() -> Result<OwnedFd> {
    // SAFETY: plain libc call.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(fail("posix_openpt(O_RDWR | O_NOCTTY)"));
    }
    // SAFETY: fd is new.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `grantpt(master)`.
pub fn grantpt(master: &OwnedFd) -> Result<()> {
    // SAFETY: plain libc call on a pty master.
    if unsafe { libc::grantpt(master.as_raw_fd()) } != 0 {
        return Err(fail("grantpt"));
    }
    Ok(())
}

/// `unlockpt(master)`.
pub fn unlockpt(master: &OwnedFd) -> Result<()> {
    // SAFETY: plain libc call on a pty master.
    if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
        return Err(fail("unlockpt"));
    }
    Ok(())
}

/// `ptsname_r(master)`: the path of the pty's slave side.
pub fn ptsname(master: &OwnedFd) -> Result<std::path::PathBuf> {
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: buf is valid for writes of its length.
    let r = unsafe { libc::ptsname_r(master.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    if r != 0 {
        return Err(Error::Sys {
            call: "ptsname_r".into(),
            errno: Errno(r),
        });
    }
    // SAFETY: ptsname_r wrote a NUL-terminated string into buf.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(std::path::PathBuf::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes()),
    ))
}

/// `tcgetattr(fd)`.
pub fn tcgetattr(fd: RawFd) -> Result<libc::termios> {
    // SAFETY: a zeroed termios is a valid out-parameter.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(fail(format!("tcgetattr({fd})")));
    }
    Ok(t)
}

/// `tcsetattr(fd, TCSADRAIN, t)`.
pub fn tcsetattr(fd: RawFd, t: &libc::termios) -> Result<()> {
    // SAFETY: valid termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, t) } != 0 {
        return Err(fail(format!("tcsetattr({fd}, TCSADRAIN)")));
    }
    Ok(())
}

/// `cfmakeraw(t)`: no echo, no line editing, no signals from keys, 8-bit bytes.
pub fn cfmakeraw(t: &mut libc::termios) {
    // SAFETY: valid termios.
    unsafe { libc::cfmakeraw(t) }
}

/// `ioctl(fd, TIOCGWINSZ)`: the terminal's window size.
pub fn ioctl_tiocgwinsz(fd: RawFd) -> Result<libc::winsize> {
    // SAFETY: a zeroed winsize is a valid out-parameter.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer for TIOCGWINSZ.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } != 0 {
        return Err(fail(format!("ioctl({fd}, TIOCGWINSZ)")));
    }
    Ok(ws)
}

/// `ioctl(fd, TIOCSWINSZ, ws)`: sets the window size (the pty sends SIGWINCH to its
/// foreground process group).
pub fn ioctl_tiocswinsz(fd: RawFd, ws: &libc::winsize) -> Result<()> {
    // SAFETY: valid winsize for TIOCSWINSZ.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, ws) } != 0 {
        return Err(fail(format!("ioctl({fd}, TIOCSWINSZ)")));
    }
    Ok(())
}

/// `pthread_sigmask(SIG_BLOCK, {sig})` for the calling thread, then `signalfd({sig})`: the
/// signal arrives as a readable fd instead of interrupting.
pub fn signalfd(sig: libc::c_int) -> Result<OwnedFd> {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the calling thread.
    let fd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(fail(format!(
                "pthread_sigmask(SIG_BLOCK, {})",
                signal_name(sig)
            )));
        }
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if fd < 0 {
        return Err(fail(format!("signalfd({})", signal_name(sig))));
    }
    // SAFETY: fd is new.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds: one clock for the supervisor, the cloned
/// child and the re-executed test (no time namespace). Async-signal-safe.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The argument of a process started by [`clone_vm`] or [`raw::spawn_helper`], as the
/// reference it was made from.
pub fn deref_helper_arg<'a, T>(arg: *const T) -> &'a T {
    // SAFETY: both callers pass a pointer to a value they keep alive, unmoved, until the new
    // process has exec'd or exited (spawn_helper's wait for it; clone_vm's keep it in
    // `Spawned` until the child is reaped), and the new process shares their memory.
    unsafe { &*arg }
}

/// A stack for a helper of [`raw::spawn_helper`], allocated before the code that starts the
/// helper may no longer allocate.
#[derive(Debug)]
pub struct HelperStack {
    base: *mut u8,
    len: usize,
}

// The stack is only ever handed to one helper at a time, by its owner.
// SAFETY: a plain heap allocation with no thread affinity.
unsafe impl Send for HelperStack {}
// SAFETY: shared references only read the pointer; the helper that writes the memory runs
// while its owner waits for it.
unsafe impl Sync for HelperStack {}

impl HelperStack {
    /// A 64 KiB stack.
    pub fn new() -> Self {
        let len = 64 * 1024;
        let base = Box::into_raw(vec![0u8; len].into_boxed_slice()) as *mut u8;
        HelperStack { base, len }
    }

    /// The 16-byte aligned top the stack grows down from.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: the top is within (one past) the allocation.
        let top = unsafe { self.base.add(self.len) };
        // SAFETY: moving down by less than 16 bytes stays within the allocation.
        unsafe { top.sub(top as usize % 16) }.cast()
    }
}

impl Default for HelperStack {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HelperStack {
    fn drop(&mut self) {
        // SAFETY: base and len describe the boxed slice made in new(), dropped once.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.base, self.len,
            )))
        };
    }
}
