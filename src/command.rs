//! [`Sandbox`] and [`Command`]: run a program from the root filesystem in a fresh sandbox,
//! the way [`std::process::Command`] runs one on the host.
//!
//! The child builds the same sandbox as an `#[isolated]` test (same [`Config`], same plan),
//! then pivots into the new root and execs the program there, by its path inside the root
//! filesystem. The program is PID 1 of its pid namespace: when it exits, or the timeout kills
//! it, the kernel kills everything else in the sandbox.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{Bind, Config};
use crate::error::{Errno, Error, Result};
use crate::plan::{self, Step};
use crate::sandbox::{self, msg, ExecSpec};
use crate::spawn;
use crate::sys::{self, Exit};

/// The `PATH` a program starts with.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A sandbox to run programs in: a [`Config`] (root filesystem, hostname, timeout) plus the
/// environment and working directory programs start with. Every [`Command`] gets a fresh
/// sandbox of its own.
///
/// ```no_run
/// let out = isotest::Sandbox::default()
///     .rootfs("/var/tmp/rootfs")
///     .hostname("web1")
///     .command("hostname", ["-s"])
///     .output()?;
/// assert_eq!(out.stdout, b"web1\n");
/// # Ok::<(), isotest::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: Config,
    env: Vec<(String, String)>,
    cwd: String,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new(Config::new())
    }
}

impl Sandbox {
    /// A sandbox built from `config`. Programs start with a clean environment (`PATH` as
    /// [`DEFAULT_PATH`], `HOME=/root`, the host's `TERM`) in `/`.
    pub fn new(config: Config) -> Self {
        let mut env = vec![
            ("PATH".to_string(), DEFAULT_PATH.to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        if let Ok(term) = std::env::var("TERM") {
            env.push(("TERM".to_string(), term));
        }
        Sandbox {
            config,
            env,
            cwd: "/".into(),
        }
    }

    /// The root filesystem spec (see [`Config::rootfs`]); without one, `ISOTEST_ROOTFS`.
    pub fn rootfs(mut self, spec: impl Into<String>) -> Self {
        self.config.rootfs = Some(spec.into());
        self
    }

    /// The hostname inside the sandbox.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.config.hostname = name.into();
        self
    }

    /// How long a program may run; then its whole pid namespace is killed and waiting for it
    /// returns [`Error::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Sets an environment variable for every program (replacing an earlier value).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        set_env(&mut self.env, key.into(), value.into());
        self
    }

    /// The working directory programs start in, inside the sandbox (default `/`).
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = dir.into();
        self
    }

    /// The size of each tmpfs of the sandbox (see [`Config::tmpfs_size`]), e.g. `"64m"`.
    pub fn tmpfs_size(mut self, size: impl Into<String>) -> Self {
        self.config.tmpfs_size = Some(size.into());
        self
    }

    /// The most processes the sandbox may have at once (see [`Config::pids_max`]).
    pub fn pids_max(mut self, max: u64) -> Self {
        self.config.pids_max = Some(max);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds a host path into the sandbox, e.g. `Bind::parse("./conf:/etc/myapp:ro", ".")`.
    pub fn bind(mut self, bind: Bind) -> Self {
        self.config.binds.push(bind);
        self
    }

    /// A command that runs `program` with `args` in a fresh sandbox. `program` is a path
    /// inside the root filesystem, or a name looked up in the sandbox's `PATH` there.
    pub fn command<I, S>(&self, program: impl Into<String>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Command {
            sandbox: self.clone(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            stdout: None,
            stderr: None,
            terminal: None,
        }
    }
}

/// Checks the environment before any fork: a name is non-empty, without `=` or NUL, and
/// neither holds a NUL byte.
fn validate_env(env: &[(String, String)]) -> Result<()> {
    for (k, v) in env {
        let problem = if k.is_empty() {
            "the name is empty; write KEY=VALUE"
        } else if k.contains('=') {
            "the name contains '='; write KEY=VALUE"
        } else if k.contains('\0') || v.contains('\0') {
            "it contains a NUL byte"
        } else {
            continue;
        };
        return Err(Error::InvalidOption {
            option: "env",
            value: format!("{k}={v}"),
            problem: problem.into(),
        });
    }
    Ok(())
}

fn set_env(env: &mut Vec<(String, String)>, key: String, value: String) {
    match env.iter_mut().find(|(k, _)| *k == key) {
        Some(kv) => kv.1 = value,
        None => env.push((key, value)),
    }
}

/// How one of a program's standard streams is connected.
#[derive(Debug)]
pub struct Stdio(StdioKind);

#[derive(Debug)]
enum StdioKind {
    Inherit,
    Piped,
    Null,
}

impl Stdio {
    /// The same stream as this process's.
    pub fn inherit() -> Self {
        Stdio(StdioKind::Inherit)
    }
    /// A pipe to this process: [`Child::stdin`], [`Child::stdout`], [`Child::stderr`].
    pub fn piped() -> Self {
        Stdio(StdioKind::Piped)
    }
    /// `/dev/null`.
    pub fn null() -> Self {
        Stdio(StdioKind::Null)
    }
}

/// A program to run in a fresh sandbox, built by [`Sandbox::command`]: like
/// [`std::process::Command`], with the sandbox's environment and working directory.
#[derive(Debug)]
pub struct Command {
    sandbox: Sandbox,
    program: String,
    args: Vec<String>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    terminal: Option<OwnedFd>,
}

/// How a program ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus(Exit);

impl ExitStatus {
    /// The exit code, if the program exited.
    pub fn code(&self) -> Option<i32> {
        match self.0 {
            Exit::Code(c) => Some(c),
            Exit::Signal(_) => None,
        }
    }

    /// The signal that killed the program, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self.0 {
            Exit::Code(_) => None,
            Exit::Signal(s) => Some(s),
        }
    }

    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.0 == Exit::Code(0)
    }

    /// The status as a shell reports it in `$?`: the exit code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match self.0 {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a finished program wrote and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output, when piped.
    pub stdout: Vec<u8>,
    /// Its standard error, when piped.
    pub stderr: Vec<u8>,
}

impl Command {
    /// Adds an argument.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for this program.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        set_env(&mut self.sandbox.env, key.into(), value.into());
        self
    }

    /// The working directory inside the sandbox.
    pub fn current_dir(&mut self, dir: impl Into<String>) -> &mut Self {
        self.sandbox.cwd = dir.into();
        self
    }

    /// Connects standard input (default: inherit for `spawn`/`status`, null for `output`).
    pub fn stdin(&mut self, s: Stdio) -> &mut Self {
        self.stdin = Some(s);
        self
    }

    /// Connects standard output (default: inherit for `spawn`/`status`, piped for `output`).
    pub fn stdout(&mut self, s: Stdio) -> &mut Self {
        self.stdout = Some(s);
        self
    }

    /// Connects standard error (default: inherit for `spawn`/`status`, piped for `output`).
    pub fn stderr(&mut self, s: Stdio) -> &mut Self {
        self.stderr = Some(s);
        self
    }

    /// Makes the pty slave `slave` the program's stdin, stdout, stderr and controlling
    /// terminal.
    pub(crate) fn terminal(&mut self, slave: OwnedFd) -> &mut Self {
        self.terminal = Some(slave);
        self
    }

    /// Starts the program and waits for it, inheriting the standard streams unless set.
    pub fn status(&mut self) -> Result<ExitStatus> {
        self.spawn()?.wait()
    }

    /// Starts the program, collects its output and waits for it. Standard output and error
    /// are piped and standard input is `/dev/null` unless set.
    pub fn output(&mut self) -> Result<Output> {
        let stdin = self.stdin.take().unwrap_or_else(Stdio::null);
        let stdout = self.stdout.take().unwrap_or_else(Stdio::piped);
        let stderr = self.stderr.take().unwrap_or_else(Stdio::piped);
        let mut child = self.start(stdin, stdout, stderr)?;
        drop(child.stdin.take());
        child.wait_with_output()
    }

    /// Starts the program and returns once it runs (its exec succeeded), inheriting the
    /// standard streams unless set.
    pub fn spawn(&mut self) -> Result<Child> {
        let stdin = self.stdin.take().unwrap_or_else(Stdio::inherit);
        let stdout = self.stdout.take().unwrap_or_else(Stdio::inherit);
        let stderr = self.stderr.take().unwrap_or_else(Stdio::inherit);
        self.start(stdin, stdout, stderr)
    }

    fn start(&mut self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Result<Child> {
        let config = &self.sandbox.config;
        config.validate()?;
        validate_env(&self.sandbox.env)?;
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let mut config = config.clone();
        let (spec, lower) = config.resolve_rootfs(&cwd)?;
        let path =
            find_program(&lower, &self.program, &self.sandbox.env).ok_or_else(|| Error::Exec {
                program: self.program.clone(),
                rootfs: spec.clone(),
                errno: Errno(libc::ENOENT),
            })?;

        let mut extra = Vec::new();
        // A terminal of the host's devpts is not in the sandbox's own: bound over /dev/console
        // (as container runtimes do), `tty` and ttyname(3) find it there.
        // (By its path: a mount refuses an fd opened in the host's mount namespace.)
        let slave_path = self.terminal.as_ref().and_then(|slave| {
            std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).ok()
        });
        if let Some(slave) = slave_path {
            let console = format!("{}/dev/console", plan::NEW_ROOT);
            extra.push(Step::Touch {
                path: console.clone(),
            });
            extra.push(Step::Bind {
                source: slave.to_string_lossy().into_owned(),
                target: console,
                recursive: false,
                readonly: false,
                optional: false,
            });
        }
        // Into the new root before the exec: the program is found by its path in there.
        extra.push(Step::Pivot(plan::NEW_ROOT.into()));
        // Then lock it, as a re-executed test locks itself before main (sandbox::lock): in a
        // nested user namespace every mount is locked, so the program's root cannot unmount or
        // remount what masks the host's kernel knobs, nor mount a fresh procfs or sysfs. The
        // nested maps restate the outer ones (see IdMap::nested); a helper the child forks
        // writes them (see Step::Lock).
        if !config.privileged {
            let (uid_map, gid_map) = crate::idmap::current().nested();
            extra.push(Step::Lock { uid_map, gid_map });
        }
        if self.sandbox.cwd != "/" {
            extra.push(Step::Chdir(self.sandbox.cwd.clone()));
        }

        let (stdio, parent) = match &self.terminal {
            Some(slave) => {
                extra.push(Step::ControllingTerminal(slave.as_raw_fd()));
                let s = spawn::Stdio {
                    stdin: sys::dup(slave.as_raw_fd())?,
                    stdout: sys::dup(slave.as_raw_fd())?,
                    stderr: sys::dup(slave.as_raw_fd())?,
                };
                (s, [None, None, None])
            }
            None => {
                let (i, pi) = connect(stdin, 0, false)?;
                let (o, po) = connect(stdout, 1, true)?;
                let (e, pe) = connect(stderr, 2, true)?;
                let s = spawn::Stdio {
                    stdin: i,
                    stdout: o,
                    stderr: e,
                };
                (s, [pi, po, pe])
            }
        };

        let c = sys::cstring;
        let argv = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| c(a.as_bytes()))
            .collect::<Result<Vec<_>>>()?;
        let envp = self
            .sandbox
            .env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>>>()?;
        let exec = ExecSpec::new(None, c(path.as_bytes())?, argv, envp);

        let spawned = spawn::spawn(&config, &lower, stdio, |_| Ok(exec), false, extra)?;
        // The pty slave is the child's now; the master sees EOF once the sandbox is gone.
        self.terminal = None;
        let started = Instant::now();
        // The channel closes on a successful exec; before that, the child may report a failed
        // step or exec.
        let mut buf = [0u8; 64];
        let failure = match sys::read(spawned.channel.as_raw_fd(), &mut buf) {
            Ok(n) if n >= 9 && (buf[0] == msg::STEP_FAILED || buf[0] == msg::EXEC_FAILED) => {
                let errno = i32::from_le_bytes(buf[1..5].try_into().unwrap_or_default());
                let index = u32::from_le_bytes(buf[5..9].try_into().unwrap_or_default());
                Some(if buf[0] == msg::STEP_FAILED {
                    Error::Setup(sandbox::step_error(&spawned.steps, index, errno).to_string())
                } else {
                    Error::Exec {
                        program: self.program.clone(),
                        rootfs: spec,
                        errno: Errno(errno),
                    }
                })
            }
            _ => None,
        };
        let [pi, po, pe] = parent;
        let mut child = Child {
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            _cgroup: spawned.cgroup,
            _memory: spawned.child_memory,
            timeout: config.timeout,
            deadline: started.checked_add(config.timeout),
            status: None,
            stdin: pi.map(File::from),
            stdout: po.map(File::from),
            stderr: pe.map(File::from),
        };
        if let Some(e) = failure {
            child.wait()?;
            return Err(e);
        }
        Ok(child)
    }
}

/// The child's end of a stream and, when piped, this process's end.
fn connect(s: Stdio, fd: RawFd, child_writes: bool) -> Result<(OwnedFd, Option<OwnedFd>)> {
    Ok(match s.0 {
        StdioKind::Inherit => (sys::dup(fd)?, None),
        StdioKind::Null => (
            sys::open(
                Path::new("/dev/null"),
                if child_writes {
                    libc::O_WRONLY
                } else {
                    libc::O_RDONLY
                },
            )?,
            None,
        ),
        StdioKind::Piped => {
            let (r, w) = sys::pipe()?;
            if child_writes {
                (w, Some(r))
            } else {
                (r, Some(w))
            }
        }
    })
}

/// The program's path inside the root filesystem: as given when it has a `/`, else the first
/// `PATH` entry (of the sandbox's environment) that has it in the lower layer.
fn find_program(lower: &Path, program: &str, env: &[(String, String)]) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    if program.is_empty() {
        return None;
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .find(|candidate| {
            let on_host = lower.join(candidate.trim_start_matches('/'));
            std::fs::metadata(on_host).is_ok_and(|m| m.is_file())
        })
}

/// A program running in its sandbox. Dropping it kills the sandbox.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    timeout: Duration,
    deadline: Option<Instant>,
    status: Option<ExitStatus>,
    /// Removed after the sandbox is reaped (field drops follow `Drop::drop`).
    _cgroup: Option<crate::cgroup::PidsCgroup>,
    /// What the child ran on before its exec (kept until it is reaped, see `Spawned`).
    _memory: spawn::ChildMemory,
    /// The program's standard input, when piped.
    pub stdin: Option<File>,
    /// The program's standard output, when piped.
    pub stdout: Option<File>,
    /// The program's standard error, when piped.
    pub stderr: Option<File>,
}

impl Child {
    /// The program's pid on the host (it is 1 inside).
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Kills the sandbox (`SIGKILL` to its PID 1, which takes the whole pid namespace).
    pub fn kill(&mut self) -> Result<()> {
        if self.status.is_none() {
            sys::pidfd_send_signal(&self.pidfd, libc::SIGKILL)?;
        }
        Ok(())
    }

    /// Waits for the program to end; past the timeout, kills the sandbox and returns
    /// [`Error::Timeout`]. Closes the program's stdin first, when piped.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        if let Some(s) = self.status {
            return Ok(s);
        }
        let mut fds = [pollfd(self.pidfd.as_raw_fd())];
        if sys::poll(&mut fds, self.wait_ms())? == 0 {
            return Err(self.time_out());
        }
        self.reap()
    }

    /// The status if the program has ended, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut fds = [pollfd(self.pidfd.as_raw_fd())];
        if sys::poll(&mut fds, 0)? == 0 {
            return Ok(None);
        }
        self.reap().map(Some)
    }

    /// Reads piped stdout and stderr to their end and waits, under the timeout.
    pub fn wait_with_output(mut self) -> Result<Output> {
        drop(self.stdin.take());
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut streams = [self.stdout.take(), self.stderr.take()];
        for f in streams.iter().flatten() {
            sys::set_nonblocking(f.as_raw_fd())?;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut exited = false;
        while !exited || streams.iter().any(Option::is_some) {
            let raw = |f: &Option<File>| f.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            let mut fds = [
                pollfd(raw(&streams[0])),
                pollfd(raw(&streams[1])),
                pollfd(if exited { -1 } else { self.pidfd.as_raw_fd() }),
            ];
            if sys::poll(&mut fds, self.wait_ms())? == 0 {
                return Err(self.time_out());
            }
            for (i, sink) in [&mut out, &mut err].into_iter().enumerate() {
                if fds[i].revents == 0 {
                    continue;
                }
                if let Some(f) = &mut streams[i] {
                    loop {
                        match f.read(&mut buf) {
                            Ok(0) => {
                                streams[i] = None;
                                break;
                            }
                            Ok(n) => sink.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                streams[i] = None;
                                break;
                            }
                        }
                    }
                }
            }
            if fds[2].revents != 0 {
                exited = true;
            }
        }
        let status = self.reap()?;
        Ok(Output {
            status,
            stdout: out,
            stderr: err,
        })
    }

    /// Milliseconds left before the timeout, for poll (-1: no limit).
    pub(crate) fn wait_ms(&self) -> i32 {
        match self.deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so poll never returns just before the deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        }
    }

    /// Kills the sandbox after its timeout; the error to return.
    pub(crate) fn time_out(&mut self) -> Error {
        let _ = self.kill();
        let _ = self.reap();
        Error::Timeout(self.timeout)
    }

    pub(crate) fn reap(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = ExitStatus(sys::waitid_pidfd(&self.pidfd)?);
        self.status = Some(s);
        Ok(s)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.reap();
        }
    }
}

pub(crate) fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_clean_with_overrides() {
        let s = Sandbox::default().env("A", "1").env("PATH", "/bin");
        assert!(s.env.contains(&("HOME".into(), "/root".into())));
        assert!(s.env.contains(&("A".into(), "1".into())));
        assert_eq!(s.env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(s.env.contains(&("PATH".into(), "/bin".into())));
    }

    #[test]
    fn bad_environment_is_named() {
        for (k, v, shown) in [("", "x", "=x"), ("A=B", "c", "A=B=c"), ("A", "b\0", "A=b")] {
            let env = [(k.to_string(), v.to_string())];
            let e = validate_env(&env).unwrap_err().to_string();
            assert!(e.contains("invalid env") && e.contains(shown), "{e}");
        }
        assert!(validate_env(&Sandbox::default().env).is_ok());
    }

    #[test]
    fn programs_are_found_in_the_lower_layer() {
        let dir = std::env::temp_dir().join(format!("isotest-find-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::write(dir.join("usr/bin/tool"), "").unwrap();
        let env = [("PATH".to_string(), DEFAULT_PATH.to_string())];
        assert_eq!(
            find_program(&dir, "tool", &env).as_deref(),
            Some("/usr/bin/tool")
        );
        assert_eq!(find_program(&dir, "nope", &env), None);
        assert_eq!(find_program(&dir, "/x/y", &env).as_deref(), Some("/x/y"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
