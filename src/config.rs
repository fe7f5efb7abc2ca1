//! [`Config`]: everything one sandbox needs, validated before any fork.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::validate;

/// The timeout when neither the attribute nor `ISOTEST_TIMEOUT` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable naming the root filesystem when the attribute does not.
pub const ENV_ROOTFS: &str = "ISOTEST_ROOTFS";
/// Environment variable overriding the default timeout.
pub const ENV_TIMEOUT: &str = "ISOTEST_TIMEOUT";

/// Everything one sandbox needs. Built from `#[isolated(...)]` arguments or by
/// [`Sandbox`](crate::Sandbox)'s builder, and checked by [`Config::validate`] before any fork.
#[derive(Debug, Clone)]
pub struct Config {
    /// The root filesystem spec (`/abs/path`, `dir:PATH`, ...); `None` means
    /// `ISOTEST_ROOTFS`, else the default.
    pub rootfs: Option<String>,
    /// The hostname inside the sandbox.
    pub hostname: String,
    /// How long the sandbox may run before its whole pid namespace is killed.
    pub timeout: Duration,
    /// Skip the user namespace: the sandbox's root is the host's root. No isolation boundary.
    pub privileged: bool,
    /// A host directory that holds the overlay's writable layer (`upper/`, with overlayfs'
    /// `work/` beside it) instead of the scratch tmpfs, so that what the sandbox wrote outlives
    /// it. Writes then reach the host disk. `None` (the default) keeps nothing.
    pub keep: Option<PathBuf>,
}

impl Config {
    /// A configuration with defaults: hostname `isotest`, the default timeout (or
    /// `ISOTEST_TIMEOUT`), rootfs from `ISOTEST_ROOTFS`.
    pub fn new() -> Self {
        Config {
            rootfs: None,
            hostname: "isotest".into(),
            timeout: DEFAULT_TIMEOUT,
            privileged: false,
            keep: None,
        }
    }

    /// Checks every value; the error names the option, the value and the fix.
    pub fn validate(&self) -> Result<()> {
        validate::hostname(&self.hostname).map_err(|problem| Error::InvalidOption {
            option: "hostname",
            value: self.hostname.clone(),
            problem,
        })?;
        if self.timeout.is_zero() {
            return Err(Error::InvalidOption {
                option: "timeout",
                value: format_duration(self.timeout),
                problem: "a timeout must be greater than zero".into(),
            });
        }
        Ok(())
    }

    /// The rootfs spec in force: the configured one, else `ISOTEST_ROOTFS`.
    pub fn rootfs_spec(&self) -> Option<String> {
        self.rootfs
            .clone()
            .or_else(|| std::env::var(ENV_ROOTFS).ok().filter(|s| !s.is_empty()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// The timeout from `ISOTEST_TIMEOUT`, if set.
pub(crate) fn env_timeout() -> Result<Option<Duration>> {
    match std::env::var(ENV_TIMEOUT) {
        Ok(v) if !v.is_empty() => {
            validate::duration(&v)
                .map(Some)
                .map_err(|problem| Error::InvalidOption {
                    option: "ISOTEST_TIMEOUT",
                    value: v,
                    problem,
                })
        }
        _ => Ok(None),
    }
}

/// Formats a duration the way the attribute accepts it: `250ms`, `30s`, `2m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Resolves a relative path against the crate that declared the test.
pub(crate) fn relative_to(base: &str, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(base).join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn rejects_bad_hostname_naming_the_value() {
        let mut c = Config::new();
        c.hostname = "bad_name".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("bad_name") && e.contains("hostname"), "{e}");
    }
}
