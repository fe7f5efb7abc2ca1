//! The two halves of an `#[isolated]` test: the supervisor on the test thread, and the
//! sandboxed test in the re-executed binary.

use std::io::Write;
use std::os::fd::RawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;

use crate::__private::{Meta, Outcome};
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::sandbox::msg;
use crate::spawn::{self, Report, Stdio};
use crate::{fixtures, sys, teardown, validate};

/// Builds the sandbox's configuration from the attribute's arguments.
pub(crate) fn config_from_meta(meta: &Meta) -> Result<Config> {
    let mut c = Config::new();
    c.hostname = match meta.hostname {
        Some(h) => h.to_string(),
        None => validate::hostname_from_fn(meta.name),
    };
    c.rootfs = meta.rootfs.map(str::to_string);
    c.timeout = match meta.timeout_ms {
        Some(ms) => std::time::Duration::from_millis(ms),
        None => config::env_timeout()?.unwrap_or(config::DEFAULT_TIMEOUT),
    };
    c.privileged = meta.privileged;
    c.proc_sys_writable = meta.proc_sys_rw;
    c.tmpfs_size = meta.tmpfs_size.map(str::to_string);
    if let Some(max) = meta.pids_max {
        c.pids_max = Some(max);
    }
    c.binds = meta
        .bind
        .iter()
        .map(|b| config::Bind::parse(b, meta.manifest_dir))
        .collect::<Result<_>>()?;
    c.validate()?;
    Ok(c)
}

/// The name libtest knows this test by: the thread's name (right under rstest's generated
/// modules and nextest too), else derived from the module path.
fn test_name(meta: &Meta) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => {
            let path = meta
                .module_path
                .split_once("::")
                .map_or("", |(_, rest)| rest);
            if path.is_empty() {
                meta.name.to_string()
            } else {
                format!("{path}::{}", meta.name)
            }
        }
    }
}

/// The supervisor: runs the test again in a fresh sandbox and turns its report into this
/// test's result.
pub(crate) fn supervise<T: Outcome>(meta: &Meta) -> T {
    let name = test_name(meta);
    if let Err(problem) = crate::preflight::check(meta.privileged) {
        if crate::preflight::skip_unsupported() {
            eprintln!(
                "isotest: skipped `{name}`: {}; {} ({} is set)",
                problem.what,
                problem.fix,
                crate::preflight::ENV_SKIP_UNSUPPORTED
            );
            return T::passed();
        }
        panic!("isotest: test `{name}`: {}", Error::from(problem));
    }
    crate::trace::begin();
    let result = run_sandboxed(meta, &name);
    crate::trace::mark("end");
    crate::trace::finish(&name);
    match result {
        Ok(Report::Pass) => T::passed(),
        // Re-raise the child's own message, so #[should_panic(expected)] matches it; the
        // child's panic hook already printed it with its location.
        Ok(Report::Fail(message)) => panic::resume_unwind(Box::new(message)),
        Err(e) => panic!("isotest: test `{name}`: {e}"),
    }
}

fn run_sandboxed(meta: &Meta, name: &str) -> Result<Report> {
    let mut config = config_from_meta(meta)?;
    let (spec, lower) = config.resolve_rootfs(Path::new(meta.manifest_dir))?;
    crate::trace::mark("resolve");
    let host = teardown::Host::before(&lower);
    crate::trace::mark("host_before");
    let (out_r, out_w) = sys::pipe()?;
    let (err_r, err_w) = sys::pipe()?;
    let stdin = sys::open(std::path::Path::new("/dev/null"), libc::O_RDONLY)?;
    let stdio = Stdio {
        stdin,
        stdout: out_w,
        stderr: err_w,
    };
    let spawned = spawn::spawn(
        &config,
        &lower,
        stdio,
        |channel| {
            spawn::test_exec(
                name,
                channel,
                !config.privileged,
                &[(fixtures::ENV_TEST, name), (fixtures::ENV_ROOTFS, &spec)],
            )
        },
        true,
        Vec::new(),
    )?;
    let ended = spawn::supervise(spawned, out_r, err_r, config.timeout)?;
    // The child is reaped: whatever of the sandbox is still on the host is the harness's bug.
    let findings = host.check();
    crate::trace::mark("host_check");
    if !findings.is_empty() {
        let text = findings.join("\n");
        eprintln!("{text}");
        return Ok(match report(ended, &config)? {
            Report::Pass => Report::Fail(text),
            Report::Fail(message) => Report::Fail(format!("{message}\n\n{text}")),
        });
    }
    report(ended, &config)
}

/// The sandboxed test's verdict, or why there is none.
fn report(ended: spawn::Ended, config: &Config) -> Result<Report> {
    if ended.timed_out {
        return Err(Error::Timeout(config.timeout));
    }
    if let Some(e) = ended.error {
        return Err(Error::Setup(e.to_string()));
    }
    ended.report.ok_or_else(|| {
        Error::Child(format!(
            "the sandboxed test ended with {} before reporting a result",
            ended.exit
        ))
    })
}

/// The panic the body raised, as the hook saw it.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// What the re-executed test binary did before `main`.
#[derive(Debug)]
pub(crate) struct Early {
    /// The report channel.
    channel: RawFd,
    /// The pivot and the lock, or why they failed.
    setup: std::result::Result<(), String>,
    /// When this process started its work before `main`, finished the pivot, the lock and
    /// the teardown baseline (with `ISOTEST_TRACE_TIMING`).
    trace: [u64; 4],
    /// `TERM`, kept from libtest, which would read a terminfo file for its report — a report
    /// nobody sees here. The body gets it back.
    term: Option<std::ffi::OsString>,
}

static EARLY: once_cell::sync::OnceCell<Option<Early>> = once_cell::sync::OnceCell::new();

/// Runs before `main` in every binary that links isotest (see `sys::PRE_MAIN`): in a
/// re-executed test, while the process is still single-threaded, it finishes the pivot into the
/// new root and locks the sandbox's mounts. Elsewhere it only looks at one environment variable.
pub(crate) fn pre_main() {
    EARLY.get_or_init(early);
}

/// The sandboxed test's state, or `None` in the supervisor.
pub(crate) fn sandboxed() -> Option<&'static Early> {
    EARLY.get_or_init(early).as_ref()
}

fn early() -> Option<Early> {
    let value = std::env::var(spawn::ENV_SANDBOX).ok()?;
    // Programs the test starts (even this binary again) are not sandboxed tests.
    std::env::remove_var(spawn::ENV_SANDBOX);
    let term = std::env::var_os("TERM");
    std::env::remove_var("TERM");
    let (fd, lock) = match value.split_once(':') {
        Some((fd, flag)) => (fd.parse().ok()?, flag == "lock"),
        None => (value.parse().ok()?, false),
    };
    let now = || {
        if crate::trace::enabled() {
            sys::monotonic_ns()
        } else {
            0
        }
    };
    let mut trace = [now(); 4];
    let setup = (|| {
        // Processes the body starts must not inherit the channel.
        sys::set_cloexec(fd)?;
        // The overlay's layers are reachable only through the old root: hold them before the
        // pivot detaches it.
        let layers = teardown::Layers::open()?;
        crate::sandbox::finish_pivot()?;
        trace[1] = now();
        if lock {
            crate::sandbox::lock()?;
        }
        trace[2] = now();
        // What the harness made, and the mounts as the body finds them.
        teardown::record(layers)?;
        trace[3] = now();
        Ok::<_, Error>(())
    })()
    .map_err(|e| e.to_string());
    Some(Early {
        channel: fd,
        setup,
        trace,
        term,
    })
}

/// Inside the sandbox: run the body, report, and exit. The verdict never goes back to libtest
/// in this process: under `#[should_panic]` it would count a panic as a pass. The supervisor
/// decides.
pub(crate) fn in_sandbox<T: Outcome>(meta: &Meta, early: &Early, body: impl FnOnce() -> T) -> T {
    let fd = early.channel;
    let channel = sys::own_fd(fd);
    let report = |tag: u8, text: &str| {
        let mut m = Vec::with_capacity(1 + text.len());
        m.push(tag);
        m.extend_from_slice(text.as_bytes());
        let _ = sys::write_all(fd, &m);
    };
    if let Err(e) = &early.setup {
        report(msg::FAIL, &format!("isotest: sandbox setup failed: {e}"));
        sys::exit_now(101);
    }
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let text = payload_text(info.payload());
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        previous(info);
    }));
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if crate::trace::enabled() {
        let [started, pivot, lock, record] = early.trace;
        crate::trace::send(
            fd,
            &[
                ("exec_libtest", started),
                ("pivot", pivot),
                ("lock", lock),
                ("record", record),
            ],
        );
    }
    if let Some(term) = &early.term {
        // libtest's main thread only waits for this test now.
        std::env::set_var("TERM", term);
    }
    report(msg::START, "");
    let mut ack = [0u8; 1];
    if sys::read(fd, &mut ack) != Ok(1) {
        sys::exit_now(101);
    }
    let result = panic::catch_unwind(AssertUnwindSafe(body));
    let failure = match result {
        // Printed as libtest prints a test's `Err`.
        Ok(outcome) => outcome.failure().inspect(|text| eprintln!("{text}")),
        Err(payload) => Some(
            PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| payload_text(&*payload)),
        ),
    };
    let body_done = if crate::trace::enabled() {
        sys::monotonic_ns()
    } else {
        0
    };
    let findings = teardown::check(teardown::Checks {
        processes: !meta.allow_leaks.contains(&"processes"),
        mounts: !meta.allow_leaks.contains(&"mounts"),
        writes: meta.writes,
    });
    let failure = if findings.is_empty() {
        failure
    } else {
        let mut text = format!(
            "isotest: the test left things behind:\n  {}",
            findings.join("\n  ")
        );
        for hint in teardown::hints(&findings, meta.writes.is_some()) {
            text.push_str("\n  hint: ");
            text.push_str(hint);
        }
        // The supervisor re-raises the message without printing it; the body's own panic was
        // printed by the hook.
        eprintln!("{text}");
        Some(match failure {
            None => text,
            Some(body) => format!("{body}\n\n{text}"),
        })
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if crate::trace::enabled() {
        let kb = crate::trace::vm_hwm_kb().unwrap_or(0);
        crate::trace::send(
            fd,
            &[
                ("body", body_done),
                ("teardown", sys::monotonic_ns()),
                ("sandbox_hwm_kb", kb),
            ],
        );
    }
    match failure {
        None => report(msg::PASS, ""),
        Some(text) => report(msg::FAIL, &text),
    }
    drop(channel);
    sys::exit_now(0)
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}
