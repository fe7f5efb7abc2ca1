//! The overhead benchmark: what `#[isolated]` costs per test, compared with the same tests run
//! plainly and with bubblewrap, crun and unshare starting `/bin/true` in the same rootfs.
//!
//! ```text
//! ISOTEST_ROOTFS=debian:bookworm cargo run -p isotest-bench --release [-- --rounds 7]
//! ```
//!
//! Every variant is measured once per round, rounds are interleaved (the order rotates each
//! round) so that load from other processes spreads over all variants, and each figure is the
//! median over the rounds with the min–max beside it. Differences (overhead = isolated − plain)
//! are taken within a round, then summarised.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

/// Test counts for the parallel runs.
const PARALLEL_NS: [usize; 3] = [10, 50, 100];
/// Test count for the serial runs.
const SERIAL_N: usize = 100;

#[derive(Debug)]
struct Options {
    rootfs: PathBuf,
    rounds: usize,
    /// Invocations per sample for the one-shot anchors (bwrap, crun, ...).
    anchor_reps: usize,
    /// Traced serial runs for the breakdown.
    trace_runs: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo run -p isotest-bench --release -- [--rootfs SPEC] [--rounds N] \
         [--anchor-reps N] [--trace-runs N]\n\
         The rootfs spec defaults to $ISOTEST_ROOTFS, else isotest's default."
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut o = Options {
        rootfs: PathBuf::new(),
        rounds: 7,
        anchor_reps: 10,
        trace_runs: 2,
    };
    let mut spec = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| {
                    eprintln!("{what} needs a positive number");
                    usage()
                })
        };
        match a.as_str() {
            "--rounds" => o.rounds = num("--rounds"),
            "--anchor-reps" => o.anchor_reps = num("--anchor-reps"),
            "--trace-runs" => o.trace_runs = num("--trace-runs"),
            "--rootfs" => spec = Some(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    // The same root filesystem the isolated tests get, through isotest's cache, so that the
    // anchors start from the very same tree.
    let spec = isotest::rootfs::spec_or_default(spec.as_deref());
    o.rootfs = isotest::rootfs::resolve(&spec).unwrap_or_else(|e| {
        eprintln!("isotest-bench: root filesystem {spec:?}: {e}");
        std::process::exit(2);
    });
    o
}

/// One way of running something, measured as a whole.
#[derive(Debug, Clone)]
struct Variant {
    key: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// Invocations per sample; the sample is the mean over them.
    reps: usize,
}

/// The outcome of one invocation.
struct Run {
    wall: Duration,
    maxrss_kb: i64,
    /// User + system time of the process and its reaped descendants.
    cpu: Duration,
    stderr: String,
}

/// Runs `argv` to completion with stdout discarded, stderr kept; fails on a non-zero exit.
fn run_once(argv: &[String], env: &[(String, String)], keep_stderr: bool) -> Res<Run> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut cmd = Command::new(&argv[0]);
    cmd.args(argv[1..].iter().map(|a| a.replace("{id}", &id)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let (status, rusage) = wait4(child.id() as libc::pid_t)?;
    let wall = start.elapsed();
    if status.code() != Some(0) {
        return Err(format!(
            "`{}` failed ({status}):\n{}",
            argv.join(" "),
            tail(&err, 30)
        ));
    }
    Ok(Run {
        wall,
        maxrss_kb: rusage.ru_maxrss,
        cpu: tv(rusage.ru_utime) + tv(rusage.ru_stime),
        stderr: if keep_stderr { err } else { String::new() },
    })
}

/// `wait4(pid)`: the exit status and the resource usage of the process and its reaped
/// descendants.
#[allow(unsafe_code)]
fn wait4(pid: libc::pid_t) -> Res<(std::process::ExitStatus, libc::rusage)> {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid out-pointers; pid is our own child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok((std::process::ExitStatus::from_raw(status), ru));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(format!("wait4({pid}): {e}"));
        }
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64)
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Median, min and max of a sample.
#[derive(Debug, Clone, Copy)]
struct Stat {
    med: f64,
    min: f64,
    max: f64,
}

fn stat(v: &[f64]) -> Stat {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Stat {
        med,
        min: s[0],
        max: s[n - 1],
    }
}

fn ms(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_stat(s: Stat) -> String {
    format!("{:>7} ms  [{}–{}]", ms(s.med), ms(s.min), ms(s.max))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn is_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid cannot fail.
    unsafe {
        libc::geteuid() == 0
    }
}

/// Makes sure bwrap and crun exist: installs Debian's packages when root and missing.
fn ensure_anchor_tools(notes: &mut Vec<String>) {
    let missing: Vec<&str> = [("bwrap", "bubblewrap"), ("crun", "crun")]
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|&(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    if !is_root() || which("apt-get").is_none() {
        notes.push(format!(
            "not installed and cannot install (needs root and apt-get): {}",
            missing.join(", ")
        ));
        return;
    }
    eprintln!("installing {} with apt-get ...", missing.join(" "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        notes.push(format!("apt-get install {} failed", missing.join(" ")));
    }
}

/// crun 1.8 refuses a hybrid cgroup host ("cgroups in hybrid mode not supported") even with
/// `--cgroup-manager=disabled`. When root on such a host, this process moves into its own
/// mount namespace and detaches the cgroup2 hierarchy there, so crun sees a legacy host.
/// Nothing else measured here uses cgroups; the host's mounts are untouched. Must run before
/// any thread exists (unshare(CLONE_NEWNS) needs an unshared fs struct).
#[allow(unsafe_code)]
fn hide_hybrid_cgroup2(notes: &mut Vec<String>) {
    let unified = c"/sys/fs/cgroup/unified";
    // SAFETY: a zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    let hybrid = unsafe { libc::statfs(unified.as_ptr(), &mut st) } == 0
        && st.f_type == libc::CGROUP2_SUPER_MAGIC;
    if !hybrid || !is_root() {
        return;
    }
    // SAFETY: plain system calls with valid strings.
    let ok = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::umount2(unified.as_ptr(), libc::MNT_DETACH) == 0
    };
    notes.push(if ok {
        "hybrid cgroup host: the benchmark runs in its own mount namespace with \
         /sys/fs/cgroup/unified detached, so crun (cgroup manager disabled) accepts it"
            .into()
    } else {
        format!(
            "hybrid cgroup host and detaching /sys/fs/cgroup/unified failed ({}); crun may fail",
            std::io::Error::last_os_error()
        )
    });
}

/// Builds the benchmark's test binary and returns its path.
fn build_test_binary() -> Res<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace")?;
    eprintln!("building the benchmark's test binary ...");
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "test",
            "-p",
            "isotest-bench",
            "--release",
            "--test",
            "trivial",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the trivial test target failed".into());
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == "trivial" {
            if let Some(exe) = v["executable"].as_str() {
                return Ok(exe.into());
            }
        }
    }
    Err("cargo did not name the trivial test executable".into())
}

/// A crun bundle whose root is the rootfs (read-only) and whose process is /bin/true.
fn crun_bundle(rootfs: &Path, dir: &Path) -> Res<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let st = Command::new("crun")
        .arg("spec")
        .current_dir(dir)
        .status()
        .map_err(|e| format!("crun spec: {e}"))?;
    if !st.success() {
        return Err("crun spec failed".into());
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let mut spec: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    spec["root"] = serde_json::json!({ "path": rootfs, "readonly": true });
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    if let Some(linux) = spec["linux"].as_object_mut() {
        // Keep cgroups out of the comparison: isotest creates none either.
        linux.remove("cgroupsPath");
        linux.remove("resources");
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.retain(|m| m["type"] != "cgroup" && m["type"] != "cgroup2");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).map_err(|e| e.to_string())
}

/// The isotest CLI, if another part of the workspace built one with a `run` subcommand.
fn isotest_cli(test_exe: &Path, notes: &mut Vec<String>) -> Option<PathBuf> {
    // <target>/release/deps/trivial-HASH -> <target>
    let target = test_exe.parent()?.parent()?.parent()?;
    let found = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("isotest"))
        .find(|p| p.is_file());
    let Some(cli) = found else {
        notes.push(format!(
            "isotest CLI: no {}/{{release,debug}}/isotest binary; anchor skipped",
            target.display()
        ));
        return None;
    };
    let help = Command::new(&cli).arg("--help").output();
    let has_run = help.is_ok_and(|o| {
        let t = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        t.lines().any(|l| l.trim_start().starts_with("run"))
    });
    if !has_run {
        notes.push(format!(
            "isotest CLI: {} has no `run` subcommand; anchor skipped",
            cli.display()
        ));
        return None;
    }
    Some(cli)
}

fn names(kind: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{kind}::t{i:03}")).collect()
}

fn test_variant(exe: &Path, rootfs: &Path, kind: &str, n: usize, serial: bool) -> Variant {
    let mut argv = vec![exe.display().to_string()];
    argv.extend(names(kind, n));
    argv.push("--exact".into());
    if serial {
        argv.push("--test-threads=1".into());
    }
    Variant {
        key: format!("{kind}/{n}/{}", if serial { "serial" } else { "parallel" }),
        argv,
        env: vec![("ISOTEST_ROOTFS".into(), rootfs.display().to_string())],
        reps: 1,
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("isotest-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Res<()> {
    let o = options();
    let mut notes = Vec::new();
    hide_hybrid_cgroup2(&mut notes);
    ensure_anchor_tools(&mut notes);
    let exe = build_test_binary()?;
    let rootfs = o.rootfs.canonicalize().map_err(|e| e.to_string())?;
    let rootfs_s = rootfs.display().to_string();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut variants = vec![test_variant(&exe, &rootfs, "plain", SERIAL_N, true)];
    variants.push(test_variant(&exe, &rootfs, "iso", SERIAL_N, true));
    for n in PARALLEL_NS {
        variants.push(test_variant(&exe, &rootfs, "plain", n, false));
        variants.push(test_variant(&exe, &rootfs, "iso", n, false));
    }
    // The floor: one exec of the test binary and libtest's start, running no test.
    variants.push(Variant {
        key: "floor".into(),
        argv: vec![
            exe.display().to_string(),
            "--exact".into(),
            "no-such-test".into(),
        ],
        env: vec![],
        reps: o.anchor_reps,
    });
    let rep = o.anchor_reps;
    let anchor = |key: &str, argv: Vec<String>| Variant {
        key: key.into(),
        argv,
        env: vec![],
        reps: rep,
    };
    let sv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut anchors: Vec<(&str, String)> = Vec::new();
    if let Some(bwrap) = which("bwrap") {
        anchors.push((
            "bwrap",
            "bwrap --unshare-all --bind ROOTFS / --proc /proc --dev /dev /bin/true".into(),
        ));
        variants.push(anchor(
            "bwrap",
            sv(&[
                &bwrap.display().to_string(),
                "--unshare-all",
                "--bind",
                &rootfs_s,
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "/bin/true",
            ]),
        ));
    } else {
        notes.push("bwrap: not found; anchor skipped".into());
    }
    let bundle = std::env::temp_dir().join(format!("isotest-bench-crun-{}", std::process::id()));
    if which("crun").is_some() {
        if !is_root() {
            notes.push(
                "crun: needs root here (the bundle has no user namespace); anchor skipped".into(),
            );
        } else {
            match crun_bundle(&rootfs, &bundle) {
                Ok(()) => {
                    anchors.push(("crun", "crun --cgroup-manager=disabled run --bundle B ID (root=ROOTFS ro, /bin/true, no cgroups)".into()));
                    // A fresh container id per invocation ({id}).
                    variants.push(anchor(
                        "crun",
                        sv(&[
                            "crun",
                            "--cgroup-manager=disabled",
                            "run",
                            "--bundle",
                            &bundle.display().to_string(),
                            "isotest-bench-{id}",
                        ]),
                    ));
                }
                Err(e) => notes.push(format!("crun: bundle setup failed ({e}); anchor skipped")),
            }
        }
    } else {
        notes.push("crun: not found; anchor skipped".into());
    }
    if which("unshare").is_some() && is_root() {
        anchors.push(("unshare", "unshare -fpmiun true".into()));
        variants.push(anchor("unshare", sv(&["unshare", "-fpmiun", "true"])));
    } else {
        notes.push("unshare: missing or not root; anchor skipped".into());
    }
    if let Some(cli) = isotest_cli(&exe, &mut notes) {
        anchors.push(("isotest-cli", "isotest run -- /bin/true".into()));
        let mut v = anchor(
            "isotest-cli",
            sv(&[&cli.display().to_string(), "run", "--", "/bin/true"]),
        );
        v.env.push(("ISOTEST_ROOTFS".into(), rootfs_s.clone()));
        variants.push(v);
    }

    // Check every variant once (and warm the page cache) before measuring.
    eprintln!("warming up ...");
    let mut failed = Vec::new();
    for v in &variants {
        if let Err(e) = run_once(&v.argv, &v.env, false) {
            eprintln!("{} failed; dropping it:\n{e}", v.key);
            failed.push(v.key.clone());
            notes.push(format!("{}: failed its warm-up run; dropped", v.key));
        }
    }
    variants.retain(|v| !failed.contains(&v.key));
    for k in ["plain/100/serial", "iso/100/serial"] {
        if failed.iter().any(|f| f == k) {
            return Err(format!("{k} failed; nothing to compare"));
        }
    }

    // Interleaved rounds: one sample of every variant per round, order rotated each round.
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut cpu_samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut rss: BTreeMap<String, i64> = BTreeMap::new();
    for r in 0..o.rounds {
        eprint!("round {}/{} ...\r", r + 1, o.rounds);
        let n = variants.len();
        for i in 0..n {
            let v = &variants[(i + r) % n];
            let mut total = Duration::ZERO;
            let mut cpu = Duration::ZERO;
            for _ in 0..v.reps {
                let run = run_once(&v.argv, &v.env, false)?;
                total += run.wall;
                cpu += run.cpu;
                let e = rss.entry(v.key.clone()).or_default();
                *e = (*e).max(run.maxrss_kb);
            }
            samples
                .entry(v.key.clone())
                .or_default()
                .push(total.as_secs_f64() * 1e3 / v.reps as f64);
            cpu_samples
                .entry(v.key.clone())
                .or_default()
                .push(cpu.as_secs_f64() * 1e3 / v.reps as f64);
        }
    }
    eprintln!();

    // Traced serial runs: where an isolated test's time goes.
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut phase_order: Vec<String> = Vec::new();
    let mut kb: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut traced = test_variant(&exe, &rootfs, "iso", SERIAL_N, true);
    traced.env.push(("ISOTEST_TRACE_TIMING".into(), "1".into()));
    for _ in 0..o.trace_runs {
        let run = run_once(&traced.argv, &traced.env, true)?;
        for line in run
            .stderr
            .lines()
            .filter(|l| l.starts_with("isotest-trace "))
        {
            for field in line.split_whitespace().skip(2) {
                let Some((k, v)) = field.split_once('=') else {
                    continue;
                };
                let Ok(v) = v.parse::<f64>() else { continue };
                if k.ends_with("_kb") {
                    kb.entry(k.into()).or_default().push(v);
                } else {
                    if !phase_order.iter().any(|p| p == k) {
                        phase_order.push(k.into());
                    }
                    phases.entry(k.into()).or_default().push(v / 1e3);
                }
            }
        }
    }

    let report = render(&Render {
        o: &o,
        threads,
        samples: &samples,
        cpu: &cpu_samples,
        rss: &rss,
        phases: &phases,
        phase_order: &phase_order,
        kb: &kb,
        anchors: &anchors,
        notes: &notes,
    });
    print!("{report}");
    let _ = std::fs::remove_dir_all(&bundle);
    Ok(())
}

struct Render<'a> {
    o: &'a Options,
    threads: usize,
    samples: &'a BTreeMap<String, Vec<f64>>,
    cpu: &'a BTreeMap<String, Vec<f64>>,
    rss: &'a BTreeMap<String, i64>,
    phases: &'a BTreeMap<String, Vec<f64>>,
    phase_order: &'a [String],
    kb: &'a BTreeMap<String, Vec<f64>>,
    anchors: &'a [(&'a str, String)],
    notes: &'a [String],
}

/// Per-round differences `a - b`, divided by `per`.
fn paired(samples: &BTreeMap<String, Vec<f64>>, a: &str, b: &str, per: f64) -> Option<Stat> {
    let (a, b) = (samples.get(a)?, samples.get(b)?);
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y) / per).collect();
    Some(stat(&d))
}

fn render(r: &Render) -> String {
    let mut s = String::new();
    let get = |k: &str| r.samples.get(k).map(|v| stat(v));
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ =
        writeln!(
        s,
        "== isotest overhead benchmark ==\nkernel {}, {} cpus, load {}, {} interleaved rounds, \
         anchors {}x per sample; figures: median [min–max] over rounds",
        uname.trim(),
        r.threads,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        r.o.rounds,
        r.o.anchor_reps
    );
    let _ = writeln!(s, "rootfs {}", r.o.rootfs.display());

    let _ = writeln!(
        s,
        "\n-- 1. serial (--test-threads=1), {SERIAL_N} trivial tests --"
    );
    let ps = get(&format!("plain/{SERIAL_N}/serial"));
    let is = get(&format!("iso/{SERIAL_N}/serial"));
    let ovh = paired(
        r.samples,
        &format!("iso/{SERIAL_N}/serial"),
        &format!("plain/{SERIAL_N}/serial"),
        SERIAL_N as f64,
    );
    if let (Some(p), Some(i), Some(o)) = (ps, is, ovh) {
        let per = |x: Stat| Stat {
            med: x.med / SERIAL_N as f64,
            min: x.min / SERIAL_N as f64,
            max: x.max / SERIAL_N as f64,
        };
        let _ = writeln!(
            s,
            "plain    wall {}   per test {}",
            fmt_stat(p),
            fmt_stat(per(p))
        );
        let _ = writeln!(
            s,
            "isolated wall {}   per test {}",
            fmt_stat(i),
            fmt_stat(per(i))
        );
        let _ = writeln!(s, "overhead per isolated test {}", fmt_stat(o));
    }
    let cpu_ovh = paired(
        r.cpu,
        &format!("iso/{SERIAL_N}/serial"),
        &format!("plain/{SERIAL_N}/serial"),
        SERIAL_N as f64,
    );
    if let Some(c) = cpu_ovh {
        let _ = writeln!(
            s,
            "cpu overhead per isolated test {}  (user+sys of the test process tree; \
             steadier than wall under contention; excludes kernel workers)",
            fmt_stat(c)
        );
    }

    let _ = writeln!(
        s,
        "\n-- 2. default test threads ({} here) --\n{:>5} {:>24} {:>24} {:>10} {:>12}",
        r.threads, "N", "plain wall", "isolated wall", "ovh/test", "iso/ideal"
    );
    for n in PARALLEL_NS {
        let (p, i) = (
            get(&format!("plain/{n}/parallel")),
            get(&format!("iso/{n}/parallel")),
        );
        let d = paired(
            r.samples,
            &format!("iso/{n}/parallel"),
            &format!("plain/{n}/parallel"),
            n as f64,
        );
        if let (Some(p), Some(i), Some(d), Some(o)) = (p, i, d, ovh) {
            // Ideal: plain wall + N x serial overhead spread over the threads.
            let ideal = p.med + n as f64 * o.med / r.threads as f64;
            let _ = writeln!(
                s,
                "{n:>5} {:>24} {:>24} {:>7} ms {:>11.2}x",
                fmt_stat(p),
                fmt_stat(i),
                ms(d.med),
                i.med / ideal
            );
        }
    }
    let _ = writeln!(
        s,
        "(ovh/test = (isolated - plain) / N at that thread count; ideal = plain + N x serial \
         overhead / {} threads)",
        r.threads
    );

    let _ = writeln!(s, "\n-- 3. anchors: one /bin/true in the same rootfs --");
    for key in ["floor", "bwrap", "crun", "unshare", "isotest-cli"] {
        if let Some(st) = get(key) {
            let what = match key {
                "floor" => "test binary exec + libtest start, no test (the floor)".to_string(),
                k => r
                    .anchors
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map_or(String::new(), |(_, d)| d.clone()),
            };
            let cpu = r
                .cpu
                .get(key)
                .map_or(String::new(), |v| format!("cpu {:>5} ms", ms(stat(v).med)));
            let _ = writeln!(s, "{key:<12} {}  {cpu}   {what}", fmt_stat(st));
        }
    }

    let _ = writeln!(s, "\n-- 4. ratios (medians) --");
    if let Some(o) = ovh {
        let mut ratio = |name: &str, key: &str, target: Option<f64>| {
            if let Some(a) = get(key) {
                let x = o.med / a.med;
                let verdict = target.map_or(String::new(), |t| {
                    format!(
                        "  target <= {t}: {}",
                        if x <= t { "met" } else { "NOT met" }
                    )
                });
                let _ = writeln!(s, "{name:<38} {x:>6.2}{verdict}");
            }
        };
        ratio("isolated overhead / bwrap", "bwrap", Some(0.7));
        ratio("isolated overhead / crun", "crun", None);
        ratio("isolated overhead / unshare -fpmiun", "unshare", None);
        ratio("isolated overhead / floor (exec+libtest)", "floor", None);
        if let (Some(c), Some(b)) = (cpu_ovh, r.cpu.get("bwrap").map(|v| stat(v))) {
            let _ = writeln!(
                s,
                "{:<38} {:>6.2}",
                "isolated cpu overhead / bwrap cpu",
                c.med / b.med
            );
        }
        if let (Some(f), Some(b)) = (get("floor"), get("bwrap")) {
            let _ = writeln!(s, "{:<38} {:>6.2}", "floor / bwrap", f.med / b.med);
        }
        if let (Some(p), Some(i)) = (
            get(&format!("plain/{SERIAL_N}/parallel")),
            get(&format!("iso/{SERIAL_N}/parallel")),
        ) {
            let budget = p.med + SERIAL_N as f64 * o.med;
            let x = i.med / budget;
            let _ = writeln!(
                s,
                "{:<38} {x:>6.2}  target <= 2: {}",
                format!("{SERIAL_N} isolated parallel / (plain + N*ovh)"),
                if x <= 2.0 { "met" } else { "NOT met" }
            );
            let ideal = p.med + SERIAL_N as f64 * o.med / r.threads as f64;
            let _ = writeln!(
                s,
                "{:<38} {:>6.2}  (1.0 = overhead spreads perfectly over {} threads)",
                format!("{SERIAL_N} isolated parallel / ideal"),
                i.med / ideal,
                r.threads
            );
        }
    }

    if !r.phase_order.is_empty() {
        let total = r.phases.get("total_us").map(|v| stat(v).med).unwrap_or(0.0);
        let _ = writeln!(
            s,
            "\n-- breakdown of one isolated test (ISOTEST_TRACE_TIMING=1, {} traced serial runs \
             of {SERIAL_N}; medians per phase) --",
            r.o.trace_runs
        );
        for k in r.phase_order {
            let Some(v) = r.phases.get(k) else { continue };
            let st = stat(v);
            let share = if k == "total_us" {
                String::new()
            } else {
                format!("{:>5.1}%", 100.0 * st.med / total)
            };
            let _ = writeln!(
                s,
                "{:<13} {:>7} ms {share}  {}",
                if k == "total_us" { "total" } else { k },
                ms(st.med),
                describe(k)
            );
        }
        let _ = writeln!(s, "(phase medians need not add up to the total's median)");
    }

    let _ = writeln!(s, "\n-- memory (peak RSS) --");
    for (k, v) in r.kb {
        let st = stat(v);
        let _ = writeln!(
            s,
            "{k:<22} {:>8.0} KiB  (median over traced tests; VmHWM)",
            st.med
        );
    }
    for key in [
        format!("plain/{SERIAL_N}/serial"),
        format!("iso/{SERIAL_N}/serial"),
    ] {
        if let Some(kb) = r.rss.get(&key) {
            let _ = writeln!(
                s,
                "{:<22} {kb:>8} KiB  (wait4 maxrss: the test process and its largest reaped descendant)",
                key
            );
        }
    }

    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n-- notes --");
        for n in r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(
        s,
        "\nNoise: other processes share these cpus; compare ratios from one run, not absolute \
         times across runs."
    );
    s
}

fn describe(phase: &str) -> &'static str {
    match phase {
        "resolve" => "supervisor: config, rootfs resolution (cached; one stat)",
        "host_before" => "supervisor: host mount table and lower-layer sample for the host check",
        "prepare" => "supervisor: plan, C strings, env copy, socketpair",
        "cgroup" => "supervisor: the sandbox's pids cgroup",
        "clone" => "supervisor: clone3 into new namespaces",
        "child_ready" => "child: first run after clone, pdeathsig, READY to supervisor",
        "cgroup_attach" => "supervisor: the child into its pids cgroup",
        "idmap" => "supervisor: uid_map/gid_map writes",
        "go_seen" => "GO from supervisor to child",
        "mounts" => "child: mount plan (scratch, overlay, /proc, /sys, /dev, /tmp), hostname, lo",
        "exec_libtest" => "exec of the test binary + libtest start until the test's body hook",
        "pivot" => "re-executed test, before main: pivot_root, drop the old root",
        "lock" => "before main: nested user namespace (helper fork, id maps)",
        "record" => "before main: teardown baseline (upper layer, mount table)",
        "start" => "START to the supervisor (libtest header dropped)",
        "body" => "ack + the test body",
        "teardown" => "inside teardown checks: processes, mounts, writes",
        "report" => "PASS to the supervisor",
        "exit" => "child exit and namespace teardown until the pidfd is readable",
        "reap" => "drain output pipes, waitid",
        "cgroup_remove" => "supervisor: the pids cgroup removed",
        "host_check" => "supervisor: host-side teardown checks",
        "end" => "supervisor: report to libtest",
        _ => "",
    }
}
