//! Optional phase timing, for the overhead benchmark: with `ISOTEST_TRACE_TIMING=1` the
//! supervisor prints one line per sandboxed test to its stderr (past libtest's capture):
//!
//! ```text
//! isotest-trace test=NAME total_us=T resolve=.. prepare=.. clone=.. ready=.. idmap=.. ...
//! ```
//!
//! Each phase is the time from the previous mark to its own, in microseconds, on one
//! monotonic clock shared by the supervisor, the cloned child and the re-executed test.
//! When the variable is unset the cost is one cached check per mark.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::RawFd;

use crate::sys;

/// The environment variable that turns tracing on.
pub const ENV: &str = "ISOTEST_TRACE_TIMING";

/// Channel message tag: phase marks from the child (`T`, then [`LABEL`]+u64 records).
pub const MSG: u8 = b'T';
/// Bytes of a label in a mark record (NUL-padded).
const LABEL: usize = 16;

static ON: once_cell::sync::OnceCell<bool> = once_cell::sync::OnceCell::new();

/// Whether tracing is on (reads the environment once per process).
pub fn enabled() -> bool {
    *ON.get_or_init(|| std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Whether tracing is on, without initialising anything: for the cloned child, where only
/// async-signal-safe work is allowed. The supervisor called [`enabled`] before the clone.
pub fn active() -> bool {
    ON.get().copied().unwrap_or(false)
}

thread_local! {
    static MARKS: RefCell<Vec<(String, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Supervisor side: starts a new trace on this (the test's) thread.
pub fn begin() {
    if enabled() {
        MARKS.with(|m| {
            let mut m = m.borrow_mut();
            m.clear();
            m.push(("begin".into(), sys::monotonic_ns()));
        });
    }
}

/// Supervisor side: records that phase `label` ended now.
pub fn mark(label: &str) {
    if enabled() {
        let now = sys::monotonic_ns();
        MARKS.with(|m| m.borrow_mut().push((label.into(), now)));
    }
}

/// Supervisor side: records the marks a child sent (the payload of a [`MSG`] message).
pub fn child_marks(payload: &[u8]) {
    if !enabled() {
        return;
    }
    MARKS.with(|m| {
        let mut m = m.borrow_mut();
        for rec in payload.chunks_exact(LABEL + 8) {
            let label = &rec[..LABEL];
            let len = label.iter().position(|&b| b == 0).unwrap_or(LABEL);
            let ns = u64::from_le_bytes(rec[LABEL..].try_into().unwrap_or_default());
            m.push((String::from_utf8_lossy(&label[..len]).into_owned(), ns));
        }
    });
}

/// Supervisor side: prints the trace of `test` as one line on stderr and clears it.
pub fn finish(test: &str) {
    if !enabled() {
        return;
    }
    let all = MARKS.with(|m| std::mem::take(&mut *m.borrow_mut()));
    // Labels ending in `_kb` carry a size, not a time.
    let (sizes, mut marks): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|(l, _)| l.ends_with("_kb"));
    if marks.is_empty() {
        return;
    }
    // Child marks arrive late; order everything by time.
    marks.sort_by_key(|&(_, ns)| ns);
    let start = marks[0].1;
    let end = marks[marks.len() - 1].1;
    let mut line = format!(
        "isotest-trace test={test} total_us={}",
        (end - start) / 1000
    );
    for w in marks.windows(2) {
        line.push_str(&format!(" {}={}", w[1].0, (w[1].1 - w[0].1) / 1000));
    }
    for (label, kb) in sizes {
        line.push_str(&format!(" {label}={kb}"));
    }
    line.push_str(&format!(" supervisor_hwm_kb={}", vm_hwm_kb().unwrap_or(0)));
    line.push('\n');
    // Straight to fd 2: libtest's capture only intercepts print!/eprint!.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// This process's peak resident set (`VmHWM` of /proc/self/status), in KiB.
pub fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One mark record: a label (truncated to 16 bytes) and a time. Async-signal-safe.
pub fn record(label: &str, ns: u64) -> [u8; LABEL + 8] {
    let mut rec = [0u8; LABEL + 8];
    let bytes = label.as_bytes();
    let n = bytes.len().min(LABEL);
    rec[..n].copy_from_slice(&bytes[..n]);
    rec[LABEL..].copy_from_slice(&ns.to_le_bytes());
    rec
}

/// Sends marks to the supervisor over `channel` as one message. Async-signal-safe: no
/// allocation, at most eight marks.
pub fn send(channel: RawFd, marks: &[(&str, u64)]) {
    let mut buf = [0u8; 1 + 8 * (LABEL + 8)];
    buf[0] = MSG;
    let mut len = 1;
    for &(label, ns) in marks.iter().take(8) {
        buf[len..len + LABEL + 8].copy_from_slice(&record(label, ns));
        len += LABEL + 8;
    }
    let _ = sys::write_all(channel, &buf[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let _ = ON.set(true);
        begin();
        let mut payload = vec![MSG];
        payload.extend_from_slice(&record("a-very-long-label-name", 42));
        child_marks(&payload[1..]);
        let marks = MARKS.with(|m| m.borrow().clone());
        assert_eq!(marks.last().unwrap(), &("a-very-long-labe".to_string(), 42));
    }
}
