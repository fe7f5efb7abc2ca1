//! Which mirror a distribution build uses: `ISOTEST_MIRROR`, else one found in the host's apt
//! sources (`/etc/apt/sources.list`, `/etc/apt/sources.list.d/*.list` and `*.sources`).
//!
//! isotest holds no mirror address of its own: a build of a distribution the host's apt does not
//! use needs `ISOTEST_MIRROR`.

use std::path::Path;

use super::Distro;
use crate::error::{Error, Result};

/// Environment variable naming the mirror for `ubuntu:` and `debian:` builds.
pub const ENV_MIRROR: &str = "ISOTEST_MIRROR";

/// One apt source: a `deb` line, or one URI of a deb822 stanza with `Types: deb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The archive's URI, without a trailing slash.
    pub uri: String,
    /// The suites it serves (`bookworm`, `bookworm-updates`).
    pub suites: Vec<String>,
    /// Its components (`main`, `universe`).
    pub components: Vec<String>,
}

/// Codenames and aliases of each distribution, to recognise its mirrors in apt sources.
fn known_suites(distro: Distro) -> &'static [&'static str] {
    match distro {
        Distro::Debian => &[
            "buster",
            "bullseye",
            "bookworm",
            "trixie",
            "forky",
            "duke",
            "sid",
            "stable",
            "testing",
            "unstable",
            "oldstable",
        ],
        Distro::Ubuntu => &[
            "xenial", "bionic", "focal", "jammy", "lunar", "mantic", "noble", "oracular", "plucky",
            "questing",
        ],
    }
}

/// Parses one-line-style sources: `deb [options] URI SUITE COMPONENT...`.
pub fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            uri: uri.trim_end_matches('/').to_string(),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
        });
    }
    out
}

/// Parses deb822-style sources (`Types:`, `URIs:`, `Suites:`, `Components:` stanzas).
pub fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let mut flush = |stanza: &mut Vec<(String, String)>| {
        let field = |name: &str| -> Vec<String> {
            stanza
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
                .collect()
        };
        let enabled = field("Enabled").first().map(String::as_str) != Some("no");
        if enabled && field("Types").iter().any(|t| t == "deb") {
            let (suites, components) = (field("Suites"), field("Components"));
            for uri in field("URIs") {
                out.push(Source {
                    uri: uri.trim_end_matches('/').to_string(),
                    suites: suites.clone(),
                    components: components.clone(),
                });
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut stanza);
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            if let Some(last) = stanza.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            stanza.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut stanza);
    out
}

/// Picks a mirror of `distro` from `sources`: the first http(s) source serving `suite` with a
/// `main` component, else the first one serving any plain codename of `distro` (so a
/// bookworm host's mirror serves a trixie build). Security and update suites never count.
pub fn pick(distro: Distro, suite: &str, sources: &[Source]) -> Option<String> {
    let usable = |s: &&Source| {
        (s.uri.starts_with("http://") || s.uri.starts_with("https://"))
            && s.components.iter().any(|c| c == "main")
    };
    let known = known_suites(distro);
    sources
        .iter()
        .filter(usable)
        .find(|s| s.suites.iter().any(|x| x == suite))
        .or_else(|| {
            sources
                .iter()
                .filter(usable)
                .find(|s| s.suites.iter().any(|x| known.contains(&x.as_str())))
        })
        .map(|s| s.uri.clone())
}

/// Every apt source of the host below `etc_apt` (normally `/etc/apt`), in apt's reading order.
pub fn host_sources(etc_apt: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        out.extend(parse_one_line(&text));
    }
    let mut files: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("list") => out.extend(parse_one_line(&text)),
            Some("sources") => out.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    out
}

/// The mirror for a build of `distro`/`suite`: `ISOTEST_MIRROR`, else the host's apt sources.
/// `spec` is for the error, which says to set `ISOTEST_MIRROR`.
pub fn find(spec: &str, distro: Distro, suite: &str) -> Result<String> {
    if let Some(m) = std::env::var(ENV_MIRROR).ok().filter(|m| !m.is_empty()) {
        return Ok(m.trim_end_matches('/').to_string());
    }
    pick(distro, suite, &host_sources(Path::new("/etc/apt"))).ok_or_else(|| Error::Rootfs {
        spec: spec.into(),
        problem: format!(
            "no {name} mirror is configured in this host's apt sources; set {ENV_MIRROR} to \
             your nearest {name} archive mirror (the URL of its /{name} directory), or choose \
             another root filesystem with ISOTEST_ROOTFS (e.g. tar:/path/to/{name}-base.tar.gz{or})",
            name = distro.name(),
            // A Debian host reaches a Debian mirror: say so.
            or = if pick(Distro::Debian, "stable", &host_sources(Path::new("/etc/apt"))).is_some() {
                ", or debian:bookworm from the Debian mirror apt uses"
            } else {
                ""
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_LINE: &str = "\
# a comment
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/ubuntu/ jammy main restricted
deb http://mirror.example/ubuntu jammy-updates main
deb http://security.example/ubuntu jammy-security main
deb-src http://src.example/ubuntu jammy main
deb https://packages.example/apt cloud-sdk-bookworm main
";

    const DEB822: &str = "\
Types: deb
URIs: http://debmirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://debmirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: trixie
Components: main

Types: deb
URIs: https://download.example/linux/debian
Suites: bookworm
Components: stable
";

    #[test]
    fn parses_one_line_sources() {
        let s = parse_one_line(ONE_LINE);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0].uri, "http://mirror.example/ubuntu");
        assert_eq!(s[0].suites, ["jammy"]);
        assert_eq!(s[0].components, ["main", "restricted"]);
    }

    #[test]
    fn parses_deb822_sources() {
        let s = parse_deb822(DEB822);
        assert_eq!(s.len(), 3, "disabled stanza kept: {s:?}");
        assert_eq!(s[0].uri, "http://debmirror.example/debian");
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
    }

    #[test]
    fn picks_the_matching_suite_then_any_of_the_distro() {
        let ubuntu = parse_one_line(ONE_LINE);
        let debian = parse_deb822(DEB822);
        let both: Vec<Source> = ubuntu.iter().chain(&debian).cloned().collect();
        assert_eq!(
            pick(Distro::Ubuntu, "jammy", &both).as_deref(),
            Some("http://mirror.example/ubuntu")
        );
        assert_eq!(
            pick(Distro::Ubuntu, "noble", &both).as_deref(),
            Some("http://mirror.example/ubuntu")
        );
        assert_eq!(
            pick(Distro::Debian, "bookworm", &both).as_deref(),
            Some("http://debmirror.example/debian")
        );
        assert_eq!(
            pick(Distro::Debian, "trixie", &both).as_deref(),
            Some("http://debmirror.example/debian"),
            "disabled stanzas and security suites never count"
        );
        assert_eq!(pick(Distro::Ubuntu, "jammy", &debian), None);
        assert_eq!(pick(Distro::Debian, "bookworm", &ubuntu), None);
    }

    #[test]
    fn reads_a_host_apt_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sources.list"), "# empty\n").unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(dir.path().join("sources.list.d/debian.sources"), DEB822).unwrap();
        std::fs::write(dir.path().join("sources.list.d/extra.list"), ONE_LINE).unwrap();
        std::fs::write(dir.path().join("sources.list.d/ignored.save"), ONE_LINE).unwrap();
        let s = host_sources(dir.path());
        assert_eq!(s.len(), 7);
        assert_eq!(
            pick(Distro::Debian, "bookworm", &s).as_deref(),
            Some("http://debmirror.example/debian")
        );
    }
}
