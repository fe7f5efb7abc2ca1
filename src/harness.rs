//! Data-driven tests: a folder of cases, one test per case, each run in a fresh sandbox.
//!
//! A case is a directory `CASES/NAME/` holding
//!
//! | file | meaning |
//! | --- | --- |
//! | `run.sh` | the script, run as `/bin/sh /case/run.sh` (or:) |
//! | `cmd` | a one-line command, run as `/bin/sh -c LINE` |
//! | `expected.stdout`, `expected.stderr` | compared exactly, when present |
//! | `expected.exit` | the exit status, default 0 (128+N for signal N) |
//! | `case.toml` | `rootfs`, `hostname`, `timeout`, `ignore`, `env` |
//! | `files/` | anything else the case needs |
//!
//! The case directory is bound read-only at `/case` (so its files are in `/case/files`), and the
//! program starts there. A `harness = false` test target hands the folder to [`main`]:
//!
//! ```no_run
//! // The body of `fn main` in tests/cases.rs, declared in Cargo.toml as
//! // [[test]] name = "cases", harness = false
//! isotest::harness::main(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/cases"));
//! ```
//!
//! libtest's filters, `--exact`, `--list`, `--ignored` and `--include-ignored` work (through
//! libtest-mimic), under `cargo test` and `cargo nextest run` alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use serde::Deserialize;

use crate::command::Sandbox;
use crate::config::{self, Bind, Config};
use crate::error::{Error, Result};
use crate::validate;

/// Where the case directory appears inside the sandbox.
pub const CASE_DIR: &str = "/case";

/// The options of `case.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseOptions {
    /// Root filesystem spec; default `ISOTEST_ROOTFS`.
    pub rootfs: Option<String>,
    /// Hostname; default the case's name made a hostname.
    pub hostname: Option<String>,
    /// Timeout such as `"30s"`; default `ISOTEST_TIMEOUT`, else 60s.
    pub timeout: Option<String>,
    /// Skip unless run with `--ignored` or `--include-ignored`.
    #[serde(default)]
    pub ignore: bool,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// One case directory.
#[derive(Debug, Clone)]
pub struct Case {
    /// The directory's name: the test's name.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// Its `case.toml`.
    pub options: CaseOptions,
}

/// Runs the cases under `dir` as a libtest-compatible test binary and exits.
pub fn main(dir: impl AsRef<Path>) -> ! {
    let args = Arguments::from_args();
    let trials = match trials(dir.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("isotest: {e}");
            std::process::exit(101);
        }
    };
    libtest_mimic::run(&args, trials).exit()
}

/// One [`Trial`] per case under `dir`, in name order.
pub fn trials(dir: &Path) -> Result<Vec<Trial>> {
    Ok(cases(dir)?
        .into_iter()
        .map(|case| {
            let ignored = case.options.ignore;
            Trial::test(case.name.clone(), move || {
                run_case(&case).map_err(Failed::from)
            })
            .with_ignored_flag(ignored)
        })
        .collect())
}

/// The cases under `dir`: every subdirectory, in name order.
pub fn cases(dir: &Path) -> Result<Vec<Case>> {
    let io = |context, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("reading the cases in", dir))? {
        let entry = entry.map_err(io("reading the cases in", dir))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let toml_path = path.join("case.toml");
        let options = match std::fs::read_to_string(&toml_path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Error::InvalidOption {
                option: "case.toml",
                value: toml_path.display().to_string(),
                problem: e.to_string().trim_end().to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CaseOptions::default(),
            Err(e) => return Err(io("reading", &toml_path)(e)),
        };
        out.push(Case {
            name: entry.file_name().to_string_lossy().into_owned(),
            dir: path,
            options,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Runs one case in a fresh sandbox and compares what it did with what it expects; the error
/// says what differed.
pub fn run_case(case: &Case) -> std::result::Result<(), String> {
    let read = |name: &str| std::fs::read_to_string(case.dir.join(name)).ok();
    let (program, args) = if case.dir.join("run.sh").is_file() {
        ("/bin/sh", vec![format!("{CASE_DIR}/run.sh")])
    } else if let Some(line) = read("cmd") {
        (
            "/bin/sh",
            vec!["-c".to_string(), line.trim_end().to_string()],
        )
    } else {
        return Err(format!(
            "{}: neither run.sh nor cmd; add one of them",
            case.dir.display()
        ));
    };
    let expected_exit = match read("expected.exit") {
        None => 0,
        Some(t) => t
            .trim()
            .parse::<i32>()
            .map_err(|_| format!("expected.exit: {:?} is not an exit status", t.trim()))?,
    };
    let config = config(case).map_err(|e| e.to_string())?;
    let mut sandbox = Sandbox::new(config)
        .bind(Bind {
            source: case.dir.clone(),
            destination: CASE_DIR.into(),
            readonly: true,
        })
        .cwd(CASE_DIR);
    for (k, v) in &case.options.env {
        sandbox = sandbox.env(k.clone(), v.clone());
    }
    let out = sandbox
        .command(program, args)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.shell_code() != expected_exit {
        problems.push(format!(
            "ended with {}, expected exit code {expected_exit}",
            out.status
        ));
    }
    for (file, actual) in [("expected.stdout", &stdout), ("expected.stderr", &stderr)] {
        if let Some(expected) = read(file) {
            if expected != **actual {
                problems.push(format!(
                    "output differs from {file}:\n{}",
                    diff(&expected, actual)
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!("case {}: {}", case.name, problems.join("\n"));
    if read("expected.stdout").is_none() && !stdout.is_empty() {
        msg.push_str(&format!("\nstdout:\n{stdout}"));
    }
    if read("expected.stderr").is_none() && !stderr.is_empty() {
        msg.push_str(&format!("\nstderr:\n{stderr}"));
    }
    Err(msg)
}

fn config(case: &Case) -> Result<Config> {
    let o = &case.options;
    let mut c = Config::new();
    c.rootfs = o.rootfs.clone();
    c.hostname = o
        .hostname
        .clone()
        .unwrap_or_else(|| validate::hostname_from_fn(&case.name));
    c.timeout = match &o.timeout {
        Some(t) => validate::duration(t).map_err(|problem| Error::InvalidOption {
            option: "timeout",
            value: t.clone(),
            problem,
        })?,
        None => config::env_timeout()?.unwrap_or(config::DEFAULT_TIMEOUT),
    };
    Ok(c)
}

/// A line diff of `expected` and `actual`: `-` lines only expected, `+` lines only actual,
/// two spaces for lines both have. Line ends are shown where they differ.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.split_inclusive('\n').collect();
    let b: Vec<&str> = actual.split_inclusive('\n').collect();
    let mut out = String::from("--- expected\n+++ actual\n");
    let show = |prefix: &str, line: &str| match line.strip_suffix('\n') {
        Some(l) => format!("{prefix}{l}\n"),
        None => format!("{prefix}{line}\n\\ no newline at end\n"),
    };
    // Longest common subsequence table, from the end; fine for test outputs.
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        a.iter().for_each(|l| out.push_str(&show("-", l)));
        b.iter().for_each(|l| out.push_str(&show("+", l)));
        return out;
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&show("  ", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&show("- ", a[i]));
            i += 1;
        } else {
            out.push_str(&show("+ ", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines() {
        let d = diff("a\nb\nc\n", "a\nx\nc\n");
        assert_eq!(d, "--- expected\n+++ actual\n  a\n- b\n+ x\n  c\n");
        let d = diff("a\n", "a");
        assert!(
            d.contains("- a\n") && d.contains("+ a\n\\ no newline at end"),
            "{d}"
        );
        assert_eq!(diff("", "x\n"), "--- expected\n+++ actual\n+ x\n");
    }

    #[test]
    fn case_toml_rejects_unknown_keys() {
        let o: CaseOptions =
            toml::from_str("hostname = \"h\"\nignore = true\n[env]\nA = \"1\"").unwrap();
        assert_eq!(o.hostname.as_deref(), Some("h"));
        assert!(o.ignore);
        assert_eq!(o.env["A"], "1");
        assert!(toml::from_str::<CaseOptions>("hostnme = \"h\"").is_err());
    }
}
