//! Pure checks of option values, shared by the runtime and the `#[isolated]` macro (which
//! includes this file by path, so it must stay free of dependencies).

use std::time::Duration;

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
pub const HOSTNAME_MAX: usize = 64;

/// Checks `name` against RFC 1123: dot-separated labels of 1 to 63 letters, digits and hyphens,
/// not starting or ending with a hyphen, at most 64 bytes in all.
pub fn hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("hostname is empty; use letters, digits and hyphens, e.g. \"web1\"".into());
    }
    if name.len() > HOSTNAME_MAX {
        return Err(format!(
            "hostname {name:?} is {} bytes long; the kernel allows at most {HOSTNAME_MAX}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "hostname {name:?} has an empty or overlong label; labels are 1 to 63 characters between dots"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "hostname {name:?} contains {bad:?}; use only letters, digits, hyphens and dots (RFC 1123)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "hostname {name:?} has a label that starts or ends with a hyphen (RFC 1123)"
            ));
        }
    }
    Ok(())
}

/// Turns a test function's name into a valid hostname: lowercase, `_` becomes `-`, other
/// characters dropped, trimmed to 63 bytes, never empty.
pub fn hostname_from_fn(name: &str) -> String {
    let mut out: String = name
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '_' | ':' | '.' => Some('-'),
            _ => None,
        })
        .collect();
    out.truncate(63);
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "isotest".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Parses a duration such as `"250ms"`, `"30s"` or `"2m"` (a whole number and a unit); it must
/// be greater than zero.
pub fn duration(text: &str) -> Result<Duration, String> {
    let fix = "write a whole number with a unit: \"500ms\", \"30s\" or \"2m\"";
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "duration {text:?} does not start with a number; {fix}"
        ));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} is too large; {fix}"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration {text:?} is too large; {fix}"))?,
        "" => return Err(format!("duration {text:?} has no unit; {fix}")),
        other => {
            return Err(format!(
                "duration {text:?} has unknown unit {other:?}; {fix}"
            ))
        }
    };
    if d.is_zero() {
        return Err(format!(
            "duration {text:?} is zero; a timeout must be greater than zero"
        ));
    }
    Ok(d)
}

/// Checks a tmpfs `size=` value: a whole number of bytes with an optional `k`, `m` or `g`
/// suffix, or a percentage of RAM from 1 to 100 (`"25%"`).
pub fn tmpfs_size(text: &str) -> Result<(), String> {
    let fix = "write bytes with an optional unit or a share of RAM: \"64m\", \"1g\" or \"25%\"";
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("size {text:?} does not start with a number; {fix}"));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("size {text:?} is too large; {fix}"))?;
    let ok = match unit {
        "" | "k" | "K" | "m" | "M" | "g" | "G" => n > 0 && n.checked_mul(1 << 30).is_some(),
        "%" => (1..=100).contains(&n),
        other => return Err(format!("size {text:?} has unknown unit {other:?}; {fix}")),
    };
    if !ok {
        return Err(format!("size {text:?} is zero or too large; {fix}"));
    }
    Ok(())
}

/// Splits a bind mount `SRC:DST[:ro|rw]` into source, destination and read-only (the default),
/// checking that the source is not empty and the destination is absolute.
pub fn bind(mount: &str) -> Result<(&str, &str, bool), String> {
    let fix = "write SRC:DST[:ro|rw], e.g. \"fixtures/data:/data:ro\"";
    let parts: Vec<&str> = mount.split(':').collect();
    let (src, dst, readonly) = match parts.as_slice() {
        [src, dst] | [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        [_, _, mode] => {
            return Err(format!(
                "bind mount {mount:?} has mode {mode:?}; the mode is \"ro\" or \"rw\""
            ))
        }
        _ => {
            return Err(format!(
                "bind mount {mount:?} is not SRC:DST[:ro|rw]; {fix}"
            ))
        }
    };
    if src.is_empty() {
        return Err(format!("bind mount {mount:?} has an empty source; {fix}"));
    }
    if !dst.starts_with('/') {
        return Err(format!(
            "bind mount {mount:?} has a relative destination {dst:?}; the destination is an \
             absolute path inside the sandbox, e.g. \"fixtures/data:/data\""
        ));
    }
    Ok((src, dst, readonly))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for good in ["web1", "a", "a-b.c-d", "x1.example.org", &"a".repeat(63)] {
            assert_eq!(hostname(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "web 1",
            "é",
            &"a".repeat(64),
            &"a.".repeat(40),
        ] {
            assert!(hostname(bad).is_err(), "{bad:?} accepted");
        }
        assert!(hostname("a_b").unwrap_err().contains("'_'"));
    }

    #[test]
    fn hostname_from_fn_names() {
        assert_eq!(
            hostname_from_fn("installer_writes_config"),
            "installer-writes-config"
        );
        assert_eq!(hostname_from_fn("__x__"), "x");
        assert_eq!(hostname_from_fn("___"), "isotest");
        assert_eq!(hostname_from_fn("Case_1"), "case-1");
        assert_eq!(hostname_from_fn(&"a".repeat(100)).len(), 63);
        for name in ["t", "case_1_x", "_leading", "mod::case_2"] {
            assert_eq!(hostname(&hostname_from_fn(name)), Ok(()));
        }
    }

    #[test]
    fn tmpfs_sizes() {
        for good in ["64m", "1g", "4096", "512k", "25%", "100%"] {
            assert_eq!(tmpfs_size(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "m",
            "0",
            "0m",
            "64mb",
            "101%",
            "0%",
            "-1m",
            "1.5g",
            "99999999999999999999",
        ] {
            assert!(tmpfs_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        for bad in [
            "",
            "s",
            "30",
            "30h",
            "0s",
            "1.5s",
            "-1s",
            "99999999999999999999s",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(duration("30").unwrap_err().contains("no unit"));
    }

    #[test]
    fn binds() {
        assert_eq!(bind("data:/data"), Ok(("data", "/data", true)));
        assert_eq!(bind("/s:/d:ro"), Ok(("/s", "/d", true)));
        assert_eq!(bind("/s:/d:rw"), Ok(("/s", "/d", false)));
        for bad in ["data", ":/d", "s:rel", "s:/d:rx", "a:/b:ro:x"] {
            assert!(bind(bad).unwrap_err().contains(bad), "{bad:?}");
        }
    }
}
