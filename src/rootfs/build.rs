//! `ubuntu:` and `debian:` specs: a minbase root filesystem built with mmdebstrap (preferred)
//! or debootstrap.
//!
//! As root, the builder writes the tree in place (`mmdebstrap --mode=root`). Otherwise
//! mmdebstrap runs in a user namespace (`--mode=unshare`, which needs the `uidmap` package and
//! subordinate ids in /etc/subuid), writes a tarball, and isotest unpacks it so that the tree
//! belongs to the caller; debootstrap needs root. The build is bounded by
//! `ISOTEST_BUILD_TIMEOUT` (20 minutes by default), reports progress on stderr, and its
//! result has apt's package lists and downloaded packages removed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::cache::{io, remove_tree, Inputs};
use super::mirror::{self, ENV_MIRROR};
use super::{archive, note, Distro, Release};
use crate::error::{Error, Result};

/// Environment variable bounding a build's time, e.g. `45m`.
pub const ENV_BUILD_TIMEOUT: &str = "ISOTEST_BUILD_TIMEOUT";
/// How long a build may run when `ISOTEST_BUILD_TIMEOUT` is not set.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Where the `ubuntu-keyring` package puts Ubuntu's archive key.
pub const UBUNTU_KEYRING: &str = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";
/// Where the `debian-archive-keyring` package puts Debian's archive keys.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// How long the mirror gets to accept a TCP connection before the build is not even tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The program that builds the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builder {
    /// mmdebstrap: fast, and works without root in a user namespace.
    Mmdebstrap,
    /// debootstrap: needs root.
    Debootstrap,
}

impl Builder {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Builder::Mmdebstrap => "mmdebstrap",
            Builder::Debootstrap => "debootstrap",
        }
    }
}

/// Everything one build needs, found by [`Plan::discover`]; the command line is a pure function
/// of it ([`Plan::argv`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to build.
    pub release: Release,
    /// Which builder.
    pub builder: Builder,
    /// The builder's executable.
    pub program: PathBuf,
    /// Whether isotest runs as root: build in place, else mmdebstrap `--mode=unshare` to a tarball.
    pub root: bool,
    /// The mirror's URL.
    pub mirror: String,
    /// The archive keyring to pass, if any.
    pub keyring: Option<PathBuf>,
}

impl Plan {
    /// Finds the mirror, keyring and builder for `release`; `text` is the spec, for errors.
    pub fn discover(text: &str, release: &Release) -> Result<Plan> {
        let mirror = mirror::find(text, release.distro, release.suite)?;
        let keyring = match release.distro {
            Distro::Ubuntu if Path::new(UBUNTU_KEYRING).is_file() => Some(UBUNTU_KEYRING.into()),
            Distro::Ubuntu => {
                return Err(Error::Unsupported {
                    what: format!(
                        "cannot verify Ubuntu packages for {text}: {UBUNTU_KEYRING} is missing"
                    ),
                    fix: "install the ubuntu-keyring package (`apt-get install ubuntu-keyring`)"
                        .into(),
                })
            }
            // A Debian host trusts these already; elsewhere they may be all there is.
            Distro::Debian => Some(PathBuf::from(DEBIAN_KEYRING)).filter(|k| k.is_file()),
        };
        let root = nix::unistd::geteuid().is_root();
        let (builder, program) = match (find_program("mmdebstrap"), find_program("debootstrap")) {
            (Some(p), _) => (Builder::Mmdebstrap, p),
            (None, Some(p)) if root => (Builder::Debootstrap, p),
            (None, Some(_)) => {
                return Err(Error::Unsupported {
                    what: format!("cannot build {text}: debootstrap needs root"),
                    fix: "install mmdebstrap to build without root (`apt-get install mmdebstrap \
                          uidmap`), or run as root"
                        .into(),
                })
            }
            (None, None) => {
                return Err(Error::Unsupported {
                    what: format!(
                        "cannot build {text}: neither mmdebstrap nor debootstrap is installed"
                    ),
                    fix:
                        "install mmdebstrap (`apt-get install mmdebstrap`), or set ISOTEST_ROOTFS \
                          to tar:PATH, dir:PATH or host"
                            .into(),
                })
            }
        };
        if builder == Builder::Mmdebstrap && !root {
            check_subids(text)?;
        }
        Ok(Plan {
            release: release.clone(),
            builder,
            program,
            root,
            mirror,
            keyring,
        })
    }

    /// The cache inputs: everything that changes the tree.
    pub fn inputs(&self) -> Inputs {
        let r = &self.release;
        Inputs {
            label: format!("{}-{}", r.distro.name(), r.suite),
            pairs: vec![
                ("kind", "release".into()),
                ("distro", r.distro.name().into()),
                ("suite", r.suite.into()),
                ("mirror", self.mirror.clone()),
                ("variant", "minbase".into()),
                ("components", "main".into()),
                ("packages", r.packages.join(",")),
                ("builder", self.builder.name().into()),
                ("mode", if self.root { "root" } else { "unshare" }.into()),
                ("trim", "1".into()),
            ],
        }
    }

    /// Where the builder writes for a tree wanted at `dest`: `dest` itself, or a tarball beside
    /// it when building without root.
    pub fn target(&self, dest: &Path) -> PathBuf {
        if self.root {
            dest.to_path_buf()
        } else {
            dest.with_extension("tar")
        }
    }

    /// The builder's command line (program name first) writing to `target`.
    pub fn argv(&self, target: &Path) -> Vec<String> {
        let mut argv = vec![self.builder.name().to_string(), "--variant=minbase".into()];
        if self.builder == Builder::Mmdebstrap {
            if self.root {
                argv.extend(["--mode=root".into(), "--format=directory".into()]);
            } else {
                argv.extend(["--mode=unshare".into(), "--format=tar".into()]);
            }
        }
        argv.push("--components=main".into());
        if let Some(k) = &self.keyring {
            argv.push(format!("--keyring={}", k.display()));
        }
        if !self.release.packages.is_empty() {
            argv.push(format!("--include={}", self.release.packages.join(",")));
        }
        argv.extend([
            self.release.suite.to_string(),
            target.display().to_string(),
            self.mirror.clone(),
        ]);
        argv
    }

    /// Builds the tree at `dest` (which must not exist yet).
    pub fn run(&self, text: &str, dest: &Path) -> Result<()> {
        check_reachable(text, &self.mirror)?;
        let target = self.target(dest);
        let argv = self.argv(&target);
        note(&format!("running {}", argv.join(" ")));
        run_bounded(text, &self.program, &argv[1..], build_timeout()?)?;
        if target != dest {
            archive::unpack(text, &target, dest)?;
            std::fs::remove_file(&target).map_err(io("removing", &target))?;
        }
        trim(dest)
    }
}

/// mmdebstrap `--mode=unshare` maps subordinate ids: without a range it fails after a while
/// with "failed to parse /etc/subuid"; say what to do before starting.
fn check_subids(text: &str) -> Result<()> {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    for file in ["/etc/subuid", "/etc/subgid"] {
        let table = std::fs::read_to_string(file).unwrap_or_default();
        if !has_subid_range(&table, &name, uid.as_raw()) {
            return Err(Error::Unsupported {
                what: format!(
                    "cannot build {text} without root: {file} has no range for user {name}"
                ),
                fix: format!(
                    "add one, e.g. `sudo usermod --add-subuids 100000-165535 --add-subgids \
                     100000-165535 {name}` (and install uidmap), or run as root"
                ),
            });
        }
    }
    Ok(())
}

/// Whether an /etc/subuid-style table gives `name` (or `uid`) a range.
fn has_subid_range(table: &str, name: &str, uid: u32) -> bool {
    let uid = uid.to_string();
    table.lines().any(|line| {
        let mut f = line.split(':');
        let who = f.next().unwrap_or_default();
        let count = f.nth(1).and_then(|c| c.trim().parse::<u64>().ok());
        (who == name || who == uid) && count.is_some_and(|c| c > 0)
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `ISOTEST_BUILD_TIMEOUT`, else [`DEFAULT_BUILD_TIMEOUT`].
pub fn build_timeout() -> Result<Duration> {
    match std::env::var(ENV_BUILD_TIMEOUT) {
        Ok(v) if !v.is_empty() => {
            crate::validate::duration(&v).map_err(|problem| Error::InvalidOption {
                option: ENV_BUILD_TIMEOUT,
                value: v,
                problem,
            })
        }
        _ => Ok(DEFAULT_BUILD_TIMEOUT),
    }
}

/// The host and port a URL connects to: through the proxy the environment names, if any.
pub fn connect_target(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let proxy = [
        format!("{scheme}_proxy"),
        format!("{scheme}_proxy").to_uppercase(),
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()));
    if let Some(proxy) = proxy {
        let proxy = if proxy.contains("://") {
            proxy
        } else {
            format!("http://{proxy}")
        };
        if proxy != url {
            return connect_target(&proxy);
        }
    }
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_string(), port.unwrap_or(default_port)));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// Fails fast, naming the mirror and the ways out, when the mirror does not accept a TCP
/// connection within [`CONNECT_TIMEOUT`].
fn check_reachable(text: &str, mirror: &str) -> Result<()> {
    let unreachable = |why: String| Error::Rootfs {
        spec: text.into(),
        problem: format!(
            "cannot reach the mirror {mirror} ({why}); set {ENV_MIRROR} to a mirror this host \
             can reach, or ISOTEST_ROOTFS to a root filesystem that needs no network \
             (tar:PATH, dir:PATH or host)"
        ),
    };
    let Some((host, port)) = connect_target(mirror) else {
        return Err(unreachable("not an http:// or https:// URL".into()));
    };
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(unreachable(match last {
        Some(e) => format!("connecting to {host}:{port}: {e}"),
        None => format!("{host} has no address"),
    }))
}

/// Runs a builder in its own process group, forwarding a line of its output every few
/// seconds, and kills the group when it outlives `timeout`.
fn run_bounded(text: &str, program: &Path, args: &[String], timeout: Duration) -> Result<()> {
    use nix::sys::signal::{killpg, Signal};
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(io("starting", program))?;
    let (tx, rx) = mpsc::channel();
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut latest: Option<String> = None;
    let mut last_note = start;
    let mut exited = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(line) => {
                if tail.len() == 30 {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                latest = Some(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let elapsed = start.elapsed();
        let quiet = last_note.elapsed();
        if quiet >= Duration::from_secs(3) {
            if let Some(line) = latest.take() {
                note(&format!("[{:>4}s] {text}: {line}", elapsed.as_secs()));
                last_note = Instant::now();
            } else if quiet >= Duration::from_secs(15) {
                note(&format!(
                    "[{:>4}s] {text}: {name} is still working",
                    elapsed.as_secs()
                ));
                last_note = Instant::now();
            }
        }
        if exited.is_none() {
            exited = child
                .try_wait()
                .map_err(io("waiting for", program))?
                .map(|s| (s, Instant::now()));
        }
        // Output pipes held open by a leftover grandchild must not hold the build.
        if exited.is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(2)) {
            break;
        }
        if elapsed >= timeout {
            // SIGTERM first: the builder unmounts what it mounted in the target.
            let _ = killpg(group, Signal::SIGTERM);
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(10) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            return Err(Error::Rootfs {
                spec: text.into(),
                problem: format!(
                    "{name} did not finish within {}; set {ENV_BUILD_TIMEOUT} to allow longer \
                     (e.g. 45m), or {ENV_MIRROR} to a faster mirror",
                    crate::config::format_duration(timeout)
                ),
            });
        }
    }
    let status = match exited {
        Some((s, _)) => s,
        None => child.wait().map_err(io("waiting for", program))?,
    };
    if status.success() {
        note(&format!(
            "[{:>4}s] {text}: {name} finished",
            start.elapsed().as_secs()
        ));
        return Ok(());
    }
    let tail: Vec<String> = tail.into_iter().map(|l| format!("  {l}")).collect();
    Err(Error::Rootfs {
        spec: text.into(),
        problem: format!(
            "{name} failed ({status}); its last output:\n{}",
            tail.join("\n")
        ),
    })
}

/// Removes apt's package lists and downloaded packages from a built tree.
pub fn trim(root: &Path) -> Result<()> {
    for (dir, keep) in [
        ("var/lib/apt/lists", &["partial", "lock"][..]),
        ("var/cache/apt/archives", &["partial", "lock"][..]),
        ("var/cache/apt", &["archives"][..]),
    ] {
        let dir = root.join(dir);
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in read.flatten() {
            let name = e.file_name();
            if keep.iter().any(|k| name == *k) {
                continue;
            }
            remove_tree(&e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(spec: &str, builder: Builder, root: bool, mirror: &str) -> Plan {
        let super::super::Spec::Release(release) = super::super::Spec::parse(spec).unwrap() else {
            panic!("{spec} is not a release");
        };
        let keyring = match release.distro {
            Distro::Ubuntu => Some(PathBuf::from(UBUNTU_KEYRING)),
            Distro::Debian => None,
        };
        Plan {
            release,
            builder,
            program: PathBuf::from("/usr/bin").join(builder.name()),
            root,
            mirror: mirror.into(),
            keyring,
        }
    }

    #[test]
    fn argv_for_ubuntu_jammy_as_root() {
        let p = plan(
            "ubuntu:jammy",
            Builder::Mmdebstrap,
            true,
            "http://m.example/ubuntu",
        );
        assert_eq!(
            p.argv(&p.target(Path::new("/c/k.tmp-1/rootfs"))),
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                "--format=directory",
                "--components=main",
                "--keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg",
                "jammy",
                "/c/k.tmp-1/rootfs",
                "http://m.example/ubuntu",
            ]
        );
    }

    #[test]
    fn argv_for_ubuntu_24_04_without_root() {
        let p = plan(
            "ubuntu:24.04+curl,iproute2",
            Builder::Mmdebstrap,
            false,
            "http://m.example/ubuntu",
        );
        assert_eq!(
            p.argv(&p.target(Path::new("/c/k.tmp-1/rootfs"))),
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=unshare",
                "--format=tar",
                "--components=main",
                "--keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg",
                "--include=curl,iproute2",
                "noble",
                "/c/k.tmp-1/rootfs.tar",
                "http://m.example/ubuntu",
            ]
        );
    }

    #[test]
    fn argv_for_debian_bookworm() {
        let p = plan(
            "debian:bookworm",
            Builder::Mmdebstrap,
            true,
            "http://m.example/debian",
        );
        assert_eq!(
            p.argv(Path::new("/c/r")),
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                "--format=directory",
                "--components=main",
                "bookworm",
                "/c/r",
                "http://m.example/debian",
            ]
        );
        let p = plan(
            "debian:12",
            Builder::Debootstrap,
            true,
            "http://m.example/debian",
        );
        assert_eq!(
            p.argv(Path::new("/c/r")),
            [
                "debootstrap",
                "--variant=minbase",
                "--components=main",
                "bookworm",
                "/c/r",
                "http://m.example/debian",
            ]
        );
    }

    #[test]
    fn every_input_is_in_the_key() {
        let base = plan(
            "debian:bookworm",
            Builder::Mmdebstrap,
            true,
            "http://a/debian",
        );
        let key = base.inputs().key();
        let mut other = base.clone();
        other.mirror = "http://b/debian".into();
        assert_ne!(other.inputs().key(), key);
        let mut other = base.clone();
        other.builder = Builder::Debootstrap;
        assert_ne!(other.inputs().key(), key);
        let mut other = base.clone();
        other.root = false;
        assert_ne!(other.inputs().key(), key);
        let mut other = base.clone();
        other.release.packages = vec!["curl".into()];
        assert_ne!(other.inputs().key(), key);
        let other = plan(
            "debian:trixie",
            Builder::Mmdebstrap,
            true,
            "http://a/debian",
        );
        assert_ne!(other.inputs().key(), key);
        assert!(key.starts_with("debian-bookworm-"), "{key}");
    }

    #[test]
    fn subordinate_id_ranges() {
        let table = "alice:100000:65536\n1001:165536:65536\nbob:0:0\n";
        assert!(has_subid_range(table, "alice", 1000));
        assert!(has_subid_range(table, "carol", 1001));
        assert!(!has_subid_range(table, "bob", 1002));
        assert!(!has_subid_range("", "alice", 1000));
    }

    #[test]
    fn connect_targets() {
        assert_eq!(
            connect_target("http://m.example/debian"),
            Some(("m.example".into(), 80))
        );
        assert_eq!(
            connect_target("https://u:p@m.example:8443/x"),
            Some(("m.example".into(), 8443))
        );
        assert_eq!(
            connect_target("http://[::1]:3142/d"),
            Some(("::1".into(), 3142))
        );
        assert_eq!(connect_target("file:///srv/mirror"), None);
    }

    #[test]
    fn unreachable_mirrors_fail_fast_naming_the_ways_out() {
        // Port 9 (discard) on loopback: refused at once on any ordinary host.
        let start = Instant::now();
        let e = check_reachable("debian:bookworm", "http://127.0.0.1:9/debian")
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
        for part in [
            "http://127.0.0.1:9/debian",
            "ISOTEST_MIRROR",
            "ISOTEST_ROOTFS",
        ] {
            assert!(e.contains(part), "{part} missing from: {e}");
        }
    }

    #[test]
    fn bounded_runs_are_killed_and_failures_show_output() {
        let e = run_bounded(
            "t",
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; sleep 30".into()],
            Duration::from_millis(500),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("did not finish within 500ms"), "{e}");
        let e = run_bounded(
            "t",
            Path::new("/bin/sh"),
            &["-c".into(), "echo E: no such suite >&2; exit 3".into()],
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("E: no such suite") && e.contains("exit status: 3"),
            "{e}"
        );
    }

    #[test]
    fn trim_removes_lists_and_packages() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "var/lib/apt/lists/deb_dists_bookworm_InRelease",
            "var/cache/apt/archives/bash_5.deb",
            "var/cache/apt/pkgcache.bin",
        ] {
            std::fs::write(r.join(f), "x").unwrap();
        }
        trim(r).unwrap();
        assert!(r.join("var/lib/apt/lists/partial").is_dir());
        assert!(!r
            .join("var/lib/apt/lists/deb_dists_bookworm_InRelease")
            .exists());
        assert!(!r.join("var/cache/apt/archives/bash_5.deb").exists());
        assert!(!r.join("var/cache/apt/pkgcache.bin").exists());
    }
}
