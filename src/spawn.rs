//! Host side: clones the child into new namespaces, writes its id maps, relays its output,
//! enforces the timeout and reaps it.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan::{self, Step};
use crate::sandbox::{self, msg, ExecSpec, Prepared};
use crate::sys::{self, Exit};

/// Environment variable that tells a re-executed test binary it runs inside a sandbox; its
/// value is the fd of the report channel.
pub const ENV_SANDBOX: &str = "__ISOTEST_SANDBOX";

/// How the child's standard streams are connected.
#[derive(Debug)]
pub struct Stdio {
    /// Becomes fd 0.
    pub stdin: OwnedFd,
    /// Becomes fd 1.
    pub stdout: OwnedFd,
    /// Becomes fd 2.
    pub stderr: OwnedFd,
}

/// A running sandbox as the supervisor sees it.
#[derive(Debug)]
pub struct Spawned {
    /// The child's pid in the host's pid namespace.
    pub pid: libc::pid_t,
    /// A pidfd for the child: to wait on and to kill.
    pub pidfd: OwnedFd,
    /// The supervisor's end of the channel.
    pub channel: OwnedFd,
    /// The steps the child applies, to describe a failed one.
    pub steps: Vec<Step>,
    /// The sandbox's `pids` cgroup, removed when this is dropped (after the child is reaped).
    pub cgroup: Option<crate::cgroup::PidsCgroup>,
    /// What the child reads and runs on until it execs: it shares this process's memory, so
    /// this lives until the child is reaped.
    pub child_memory: ChildMemory,
}

/// The prepared plan and the stack the cloned child uses before its exec.
#[derive(Debug)]
pub struct ChildMemory {
    #[expect(dead_code, reason = "the child reads it through a pointer")]
    prepared: Box<Prepared>,
    #[expect(dead_code, reason = "the child runs on it")]
    stack: Vec<u8>,
}

/// The stack the cloned child runs on until it execs.
const CHILD_STACK: usize = 256 * 1024;

/// The namespaces every sandbox gets, apart from the user namespace.
const NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// Starts a child in fresh namespaces that builds the sandbox from `config` over `lower` and
/// then execs `exec`. Returns once the child runs in its namespaces with its id maps written.
pub fn spawn(
    config: &Config,
    lower: &Path,
    stdio: Stdio,
    exec: impl FnOnce(RawFd) -> Result<ExecSpec>,
    keep_channel: bool,
    extra_steps: Vec<Step>,
) -> Result<Spawned> {
    // The sandbox mounts on /proc, /sys, /dev and /tmp of the root: a symlink there would take
    // the mount (and the files made under it) out of the new root.
    let hostile = |root: &Path| {
        plan::check_mount_points(root).map_err(|problem| Error::InvalidOption {
            option: "rootfs",
            value: root.display().to_string(),
            problem,
        })
    };
    hostile(lower)?;
    if let Some(keep) = &config.keep {
        hostile(&keep.join("upper"))?;
    }
    // Reserve an fd number for the lower layer; the child opens the layer onto it.
    let lower_fd = sys::open(Path::new("/dev/null"), libc::O_RDONLY)?;
    // The same for each bind source, whose mount point is resolved inside the root first.
    let destinations = config.resolve_binds(lower)?;
    let mut bind_fds = Vec::with_capacity(config.binds.len());
    let mut binds = Vec::with_capacity(config.binds.len());
    for (bind, destination) in config.binds.iter().zip(destinations) {
        let fd = sys::open(Path::new("/dev/null"), libc::O_RDONLY)?;
        binds.push(plan::BindInput {
            source: bind.source.to_string_lossy().into_owned(),
            fd: fd.as_raw_fd(),
            destination,
            dir: bind.source.is_dir(),
            readonly: bind.readonly,
        });
        bind_fds.push(fd);
    }
    // And one for a kept upper layer's host directory.
    let keep_fd = match &config.keep {
        Some(_) => Some(sys::open(Path::new("/dev/null"), libc::O_RDONLY)?),
        None => None,
    };
    let userns = !config.privileged;
    let idmap = crate::idmap::current();
    let mut steps = plan::plan(&plan::Input {
        lower: lower.to_string_lossy().into_owned(),
        lower_fd: lower_fd.as_raw_fd(),
        hostname: config.hostname.clone(),
        userns,
        mapped_gids: if userns {
            idmap.mapped_gids()
        } else {
            u32::MAX
        },
        binds,
        keep: config
            .keep
            .as_ref()
            .zip(keep_fd.as_ref())
            .map(|(path, fd)| (path.to_string_lossy().into_owned(), fd.as_raw_fd())),
        proc_sys_writable: config.proc_sys_writable,
        tmpfs_size: config.tmpfs_size.clone(),
        // Without a user namespace RLIMIT_NPROC would count every process of the host's user.
        nproc: config.pids_max.filter(|_| userns),
    });
    steps.extend(extra_steps);
    let (supervisor_channel, child_channel) = sys::socketpair()?;
    let prepared = Box::new(Prepared {
        channel: child_channel.as_raw_fd(),
        supervisor_channel: supervisor_channel.as_raw_fd(),
        stdio: [
            stdio.stdin.as_raw_fd(),
            stdio.stdout.as_raw_fd(),
            stdio.stderr.as_raw_fd(),
        ],
        steps: sandbox::compile(&steps)?,
        exec: exec(child_channel.as_raw_fd())?,
        keep_channel,
        new_session: true,
    });
    let flags = NAMESPACES
        | if userns {
            libc::CLONE_NEWUSER as u64
        } else {
            0
        };
    let mut stack = vec![0u8; CHILD_STACK];
    crate::trace::mark("prepare");
    let cgroup = config.pids_max.and_then(crate::cgroup::PidsCgroup::create);
    crate::trace::mark("cgroup");
    let arg = &*prepared as *const Prepared as *mut libc::c_void;
    let (pid, pidfd) = sys::clone_vm(flags as libc::c_int, sandbox::child_entry, arg, &mut stack)?;
    crate::trace::mark("clone");
    // The child has its own copies; close ours so EOF means the child is gone.
    drop((child_channel, stdio, lower_fd, bind_fds, keep_fd));
    let spawned = Spawned {
        pid,
        pidfd,
        channel: supervisor_channel,
        steps,
        cgroup,
        child_memory: ChildMemory { prepared, stack },
    };
    if let Err(e) = handshake(&spawned, userns) {
        let _ = sys::pidfd_send_signal(&spawned.pidfd, libc::SIGKILL);
        let _ = sys::waitid_pidfd(&spawned.pidfd);
        return Err(e);
    }
    Ok(spawned)
}

/// Writes the child's id maps from this (the parent) user namespace, then lets it go on.
fn handshake(s: &Spawned, userns: bool) -> Result<()> {
    let mut b = [0u8; 16];
    match sys::read(s.channel.as_raw_fd(), &mut b) {
        Ok(n) if n >= 1 && b[0] == msg::READY => crate::trace::mark("child_ready"),
        _ => {
            let exit = sys::waitid_pidfd(&s.pidfd)?;
            return Err(Error::Child(format!(
                "the sandbox child ended ({exit}) before it was ready"
            )));
        }
    }
    if userns {
        crate::idmap::current().write(s.pid)?;
    }
    crate::trace::mark("idmap");
    // Into its pids cgroup before it goes on, so that everything it starts counts.
    if let Some(cgroup) = &s.cgroup {
        cgroup.add(s.pid)?;
        crate::trace::mark("cgroup_attach");
    }
    sys::write_all(s.channel.as_raw_fd(), &[msg::GO]).map_err(|e| Error::Sys {
        call: "write(channel, GO)".into(),
        errno: crate::error::Errno(e),
    })
}

/// What the sandboxed test reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The body passed and teardown found nothing.
    Pass,
    /// The body panicked or returned `Err`, or teardown found a leak: the message.
    Fail(String),
}

/// How a supervised sandbox ended.
#[derive(Debug)]
pub struct Ended {
    /// The last report, if any.
    pub report: Option<Report>,
    /// A setup or exec failure the child reported.
    pub error: Option<Error>,
    /// How PID 1 ended.
    pub exit: Exit,
    /// The timeout killed it.
    pub timed_out: bool,
}

/// Forwards a byte stream to `print!`/`eprint!` (which libtest captures), never splitting a
/// UTF-8 character across two writes.
struct Relay {
    fd: Option<OwnedFd>,
    pending: Vec<u8>,
    to_stderr: bool,
}

impl Relay {
    fn new(fd: OwnedFd, to_stderr: bool) -> Result<Self> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(Relay {
            fd: Some(fd),
            pending: Vec::new(),
            to_stderr,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Reads what is available; `discard` drops it instead of printing.
    fn pump(&mut self, buf: &mut [u8], discard: bool) {
        let fd = self.raw();
        if fd < 0 {
            return;
        }
        loop {
            match sys::read(fd, buf) {
                Ok(0) => {
                    self.flush_all();
                    self.fd = None;
                    return;
                }
                Ok(n) if discard => {
                    let _ = n;
                }
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    self.emit();
                }
                Err(libc::EAGAIN) => return,
                Err(_) => {
                    self.fd = None;
                    return;
                }
            }
        }
    }

    fn emit(&mut self) {
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        if valid == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        if self.to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
        self.pending.drain(..valid);
    }

    fn flush_all(&mut self) {
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            if self.to_stderr {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// Supervises a sandboxed test: relays its output, reads its reports, enforces `timeout`,
/// and reaps it.
pub fn supervise(s: Spawned, stdout: OwnedFd, stderr: OwnedFd, timeout: Duration) -> Result<Ended> {
    // A timeout too far out to represent is no timeout.
    let deadline = Instant::now().checked_add(timeout);
    let mut out = Relay::new(stdout, false)?;
    let mut err = Relay::new(stderr, true)?;
    let mut channel = Some(s.channel);
    let mut exited = false;
    let mut timed_out = false;
    let mut report = None;
    let mut error = None;
    let mut buf = vec![0u8; 64 * 1024];
    // Until the body starts, what the test binary prints is libtest's own header.
    let mut started = false;
    loop {
        if exited && out.fd.is_none() && err.fd.is_none() {
            break;
        }
        let mut fds = [
            pollfd(channel.as_ref().map_or(-1, AsRawFd::as_raw_fd)),
            pollfd(out.raw()),
            pollfd(err.raw()),
            pollfd(if exited { -1 } else { s.pidfd.as_raw_fd() }),
        ];
        let wait_ms = match deadline {
            Some(deadline) if !timed_out => {
                let left = deadline.saturating_duration_since(Instant::now());
                left.as_millis().min(i32::MAX as u128) as i32
            }
            _ => -1,
        };
        if sys::poll(&mut fds, wait_ms)? == 0 && !timed_out {
            timed_out = true;
            sys::pidfd_send_signal(&s.pidfd, libc::SIGKILL)?;
            continue;
        }
        if fds[1].revents != 0 {
            out.pump(&mut buf, !started);
        }
        if fds[2].revents != 0 {
            err.pump(&mut buf, !started);
        }
        if fds[0].revents != 0 {
            if let Some(ch) = &channel {
                match sys::read(ch.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(_) => channel = None,
                    Ok(n) => {
                        let m = &buf[..n];
                        match m[0] {
                            msg::START => {
                                crate::trace::mark("start");
                                // Everything libtest printed before the body is in the pipes
                                // now (the test flushed before sending this): drop it.
                                out.pump(&mut buf, true);
                                err.pump(&mut buf, true);
                                started = true;
                                let _ = sys::write_all(ch.as_raw_fd(), &[msg::STARTED]);
                            }
                            crate::trace::MSG => crate::trace::child_marks(&buf[1..n]),
                            msg::PASS => {
                                crate::trace::mark("report");
                                report = Some(Report::Pass)
                            }
                            msg::FAIL => {
                                crate::trace::mark("report");
                                report = Some(Report::Fail(
                                    String::from_utf8_lossy(&buf[1..n]).into_owned(),
                                ))
                            }
                            msg::STEP_FAILED | msg::EXEC_FAILED if n >= 9 => {
                                let errno = i32::from_le_bytes(buf[1..5].try_into().unwrap());
                                let index = u32::from_le_bytes(buf[5..9].try_into().unwrap());
                                error = Some(if buf[0] == msg::STEP_FAILED {
                                    sandbox::step_error(&s.steps, index, errno)
                                } else {
                                    Error::Sys {
                                        call: "execveat(test binary)".into(),
                                        errno: crate::error::Errno(errno),
                                    }
                                });
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if fds[3].revents != 0 {
            crate::trace::mark("exit");
            exited = true;
        }
    }
    let exit = sys::waitid_pidfd(&s.pidfd)?;
    // Reaped: the whole pid namespace is gone, so its cgroup can go.
    drop(s.cgroup);
    crate::trace::mark("cgroup_remove");
    crate::trace::mark("reap");
    Ok(Ended {
        report,
        error,
        exit,
        timed_out,
    })
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// The test binary, opened once: every sandbox execs it through this fd, which stays valid
/// even where the child's scratch mount shadows the binary's directory.
static EXE: once_cell::sync::OnceCell<(OwnedFd, CString)> = once_cell::sync::OnceCell::new();

/// The exec of the current test binary, filtered to exactly `test`, reporting on `channel`;
/// `lock` has it lock its mounts in a nested user namespace, `env` is added to its environment.
pub fn test_exec(test: &str, channel: RawFd, lock: bool, env: &[(&str, &str)]) -> Result<ExecSpec> {
    let (exe, path) = EXE.get_or_try_init(|| {
        let fd = sys::open_path(Path::new("/proc/self/exe"), 0)?;
        let path = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "test".into());
        Ok::<_, Error>((fd, sys::cstring(path.as_os_str().as_bytes())?))
    })?;
    let c = sys::cstring;
    let argv = vec![
        path.clone(),
        c(test.as_bytes())?,
        c(b"--exact")?,
        c(b"--nocapture")?,
        c(b"--test-threads=1")?,
        c(b"--include-ignored")?,
        // libtest's own report in there is dropped: the plainest is the cheapest.
        c(b"--color=never")?,
        c(b"--format=terse")?,
    ];
    // The host's environment stays (libtest's and cargo's variables, TERM), but the paths it
    // names belong to the host: PATH and HOME are the sandbox's own.
    let defaults = [("PATH", crate::command::DEFAULT_PATH), ("HOME", "/root")];
    let env: Vec<(&str, &str)> = defaults.iter().chain(env).copied().collect();
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != ENV_SANDBOX && !env.iter().any(|(e, _)| k == e))
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            c(&kv)
        })
        .collect::<Result<_>>()?;
    for (k, v) in &env {
        envp.push(c(format!("{k}={v}").as_bytes())?);
    }
    let lock = if lock { "lock" } else { "nolock" };
    envp.push(c(format!("{ENV_SANDBOX}={channel}:{lock}").as_bytes())?);
    Ok(ExecSpec::new(
        Some(exe.as_raw_fd()),
        path.clone(),
        argv,
        envp,
    ))
}
