//! `#[isolated]` tests run from a nextest archive, split into partitions: each shard runs the
//! binary nextest extracted, and the re-exec (through /proc/self/exe) uses that same binary.

use std::path::Path;
use std::process::Command;

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// "N tests run: M passed" from nextest's summary line.
fn passed(stderr: &str) -> Option<usize> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("tests run:") || l.contains("test run:"))?;
    let after = line.split(':').nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn isolated_tests_run_sharded_from_a_nextest_archive() {
    let has_nextest = cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nextest {
        eprintln!("skipped: cargo-nextest is not installed (cargo install cargo-nextest)");
        return;
    }
    assert!(
        std::env::var_os("ISOTEST_ROOTFS").is_some(),
        "set ISOTEST_ROOTFS to a root filesystem directory for the isolated tests"
    );
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("tests.tar.zst");
    let out = cargo()
        .args([
            "nextest",
            "archive",
            "-p",
            "isotest-bench",
            "--test",
            "trivial",
        ])
        .arg("--archive-file")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo nextest archive failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ten plain and ten isolated tests, split over two shards.
    let filter = "test(/^iso::t00[0-9]$/) | test(/^plain::t00[0-9]$/)";
    let mut total = 0;
    for shard in ["1/2", "2/2"] {
        let extract = tmp.path().join(format!("x{}", &shard[..1]));
        std::fs::create_dir(&extract).unwrap();
        let out = cargo()
            .args(["nextest", "run", "--no-fail-fast", "--archive-file"])
            .arg(&archive)
            .args(["--workspace-remap", env!("CARGO_MANIFEST_DIR")])
            .arg("--extract-to")
            .arg(&extract)
            .args(["--partition", &format!("count:{shard}"), "-E", filter])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "shard {shard} failed:\n{stderr}");
        let n =
            passed(&stderr).unwrap_or_else(|| panic!("no summary for shard {shard}:\n{stderr}"));
        assert!(n > 0, "shard {shard} ran nothing:\n{stderr}");
        assert!(
            stderr.contains("iso::t00"),
            "shard {shard} ran no isolated test:\n{stderr}"
        );
        assert!(
            has_trivial_binary(&extract),
            "nothing extracted under {}",
            extract.display()
        );
        total += n;
    }
    assert_eq!(
        total, 20,
        "the two shards together run every selected test once"
    );
}

/// The shard ran binaries from the extracted archive, not from the build's target dir.
fn has_trivial_binary(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_trivial_binary(&p)
        } else {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("trivial-") && !n.ends_with(".d"))
        }
    })
}
