//! Root filesystems end to end: archives, hostile archives, the cache under concurrency and
//! interruption, a real Debian build, and the messages bad specs give.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use isotest::rootfs::archive;

fn isotest(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isotest"))
        .args(args)
        .env("ISOTEST_CACHE", cache)
        .env_remove("ISOTEST_MIRROR")
        .output()
        .expect("running isotest")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `isotest rootfs path SPEC` and returns the printed lower layer.
fn path_of(cache: &Path, spec: &str) -> (PathBuf, String) {
    let o = isotest(cache, &["rootfs", "path", spec]);
    assert!(
        o.status.success(),
        "isotest rootfs path {spec}: {}",
        stderr(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    (PathBuf::from(out.trim()), stderr(&o))
}

fn builds(log: &str) -> usize {
    log.lines()
        .filter(|l| l.starts_with("isotest: building "))
        .count()
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A small tree as tar bytes: directories, files with modes and an owner, a symlink, a hard link.
fn small_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(if path == "home/user/owned" { 1234 } else { 0 });
        h.set_gid(if path == "home/user/owned" { 2345 } else { 0 });
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    use tar::EntryType as T;
    add("./", T::Directory, 0o755, None, b"");
    add("usr/", T::Directory, 0o755, None, b"");
    add("usr/bin/", T::Directory, 0o755, None, b"");
    add(
        "usr/bin/hello",
        T::Regular,
        0o755,
        None,
        b"#!/bin/sh\necho hello\n",
    );
    add("usr/bin/su", T::Regular, 0o4755, None, b"setuid");
    add("usr/bin/hello2", T::Link, 0o755, Some("usr/bin/hello"), b"");
    add("bin", T::Symlink, 0o777, Some("usr/bin"), b"");
    add("etc/", T::Directory, 0o755, None, b"");
    add("etc/os-release", T::Regular, 0o644, None, b"ID=isotest\n");
    add("proc/", T::Directory, 0o555, None, b"");
    add("home/user/owned", T::Regular, 0o600, None, b"mine");
    add("run/fifo", T::Fifo, 0o600, None, b"");
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn check_small_tree(lower: &Path) {
    assert_eq!(
        fs::read_to_string(lower.join("etc/os-release")).unwrap(),
        "ID=isotest\n"
    );
    assert_eq!(
        fs::read_link(lower.join("bin")).unwrap(),
        PathBuf::from("usr/bin")
    );
    let hello = fs::metadata(lower.join("usr/bin/hello")).unwrap();
    assert_eq!(hello.mode() & 0o7777, 0o755);
    assert_eq!(
        hello.ino(),
        fs::metadata(lower.join("usr/bin/hello2")).unwrap().ino()
    );
    let su = fs::metadata(lower.join("usr/bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!(
        fs::metadata(lower.join("proc")).unwrap().mode() & 0o7777,
        0o555
    );
    assert_eq!(hello.mtime(), 1_600_000_000);
    assert!(fs::symlink_metadata(lower.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    let owned = fs::metadata(lower.join("home/user/owned")).unwrap();
    if root() {
        assert_eq!((owned.uid(), owned.gid()), (1234, 2345));
    } else {
        assert_eq!(owned.uid(), nix::unistd::geteuid().as_raw());
    }
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn tar_gz_tar_zst_and_tar_xz_unpack_with_modes_links_and_owners() {
    let dir = tempfile::tempdir().unwrap();
    let tar = small_tar();
    let files = [
        ("small.tar", tar.clone()),
        ("small.tar.gz", gzip(&tar)),
        ("small.tar.zst", zstd::encode_all(&tar[..], 3).unwrap()),
        ("small.tar.xz", {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }),
    ];
    let cache = dir.path().join("cache");
    for (name, bytes) in files {
        let file = dir.path().join(name);
        fs::write(&file, bytes).unwrap();
        let spec = format!("tar:{}", file.display());
        let (lower, log) = path_of(&cache, &spec);
        assert!(lower.starts_with(&cache), "{lower:?}");
        check_small_tree(&lower);
        assert_eq!(builds(&log), 1, "{log}");
        let (again, log) = path_of(&cache, &spec);
        assert_eq!((again, builds(&log)), (lower, 0));
    }
}

#[test]
fn a_debian_tree_round_trips_through_tar_zst() {
    // The tree the other tests run on (ISOTEST_ROOTFS, through the cache).
    let tree = &crate::rootfs_dir();
    assert!(tree.join("usr/bin/bash").exists(), "{}", tree.display());
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bookworm.tar.zst");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} --numeric-owner -cf - . | zstd -q -T0 -3 -o {}",
            tree.display(),
            archive.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let cache = dir.path().join("cache");
    let (lower, log) = path_of(&cache, &format!("tar:{}", archive.display()));
    assert_eq!(builds(&log), 1, "{log}");
    let count = |p: &Path| walk(p).len();
    assert_eq!(count(&lower), count(tree));
    for file in ["etc/os-release", "usr/bin/bash", "etc/passwd"] {
        assert_eq!(
            fs::read(lower.join(file)).unwrap(),
            fs::read(tree.join(file)).unwrap(),
            "{file}"
        );
    }
    let mode = |p: PathBuf| fs::symlink_metadata(p).unwrap().mode();
    assert_eq!(
        mode(lower.join("usr/bin/passwd")),
        mode(tree.join("usr/bin/passwd"))
    );
    assert_eq!(mode(lower.join("tmp")), mode(tree.join("tmp")));
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

/// One raw tar member with its name written as is (tar::Builder refuses `..`).
fn raw_member(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn raw_tar(members: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = members.concat();
    out.extend_from_slice(&[0; 1024]);
    out
}

#[test]
fn hostile_archives_never_write_outside_the_root() {
    use tar::EntryType as T;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), "untouched").unwrap();
    let out = outside.display().to_string();
    let refused: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        (
            "dotdot",
            vec![raw_member("../outside/pwned", T::Regular, "", b"x")],
            "\"../outside/pwned\" has a `..` component",
        ),
        (
            "nested-dotdot",
            vec![raw_member("a/../../outside/pwned", T::Regular, "", b"x")],
            "`..`",
        ),
        (
            "write-through-absolute-symlink",
            vec![
                raw_member("link", T::Symlink, &out, b""),
                raw_member("link/pwned", T::Regular, "", b"x"),
            ],
            "passes through the symlink \"link\"",
        ),
        (
            "write-through-relative-symlink",
            vec![
                raw_member("up", T::Symlink, "../outside", b""),
                raw_member("up/victim", T::Regular, "", b"x"),
            ],
            "passes through the symlink \"up\"",
        ),
        (
            "directory-through-symlink",
            vec![
                raw_member("d", T::Symlink, &out, b""),
                raw_member("d/sub/", T::Directory, "", b""),
            ],
            "passes through the symlink \"d\"",
        ),
        (
            "hardlink-out",
            vec![raw_member("h", T::Link, "../outside/victim", b"")],
            "hard link to a path outside the root",
        ),
        (
            "hardlink-through-symlink",
            vec![
                raw_member("s", T::Symlink, &out, b""),
                raw_member("h", T::Link, "s/victim", b""),
            ],
            "passes through the symlink \"s\"",
        ),
    ];
    for (name, members, expected) in refused {
        let file = dir.path().join(format!("{name}.tar"));
        fs::write(&file, raw_tar(&members)).unwrap();
        let dest = dir.path().join(format!("{name}-root"));
        let e = archive::unpack(&format!("tar:{}", file.display()), &file, &dest)
            .expect_err(name)
            .to_string();
        assert!(e.contains(expected), "{name}: {e}");
        assert!(e.contains("refusing"), "{name}: {e}");
    }

    // Contained rather than refused: a leading `/`, and a regular file replacing a symlink.
    let file = dir.path().join("contained.tar");
    fs::write(
        &file,
        raw_tar(&[
            raw_member("/abs/file", T::Regular, "", b"inside"),
            raw_member("f", T::Symlink, &format!("{out}/victim"), b""),
            raw_member("f", T::Regular, "", b"replaced"),
            raw_member("g", T::Symlink, &format!("{out}/victim"), b""),
            raw_member("h", T::Link, "g", b""),
        ]),
    )
    .unwrap();
    let dest = dir.path().join("contained-root");
    archive::unpack("tar:contained", &file, &dest).unwrap();
    assert_eq!(fs::read_to_string(dest.join("abs/file")).unwrap(), "inside");
    assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "replaced");
    assert!(fs::symlink_metadata(dest.join("h"))
        .unwrap()
        .file_type()
        .is_symlink());

    let mut seen: Vec<String> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["victim"]);
    assert_eq!(
        fs::read_to_string(outside.join("victim")).unwrap(),
        "untouched"
    );
    assert!(!dir.path().join("pwned").exists());
}

#[test]
fn sixteen_processes_share_one_build() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.tar.gz");
    fs::write(&file, gzip(&small_tar())).unwrap();
    let cache = dir.path().join("cache");
    let spec = format!("tar:{}", file.display());
    let children: Vec<_> = (0..16)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_isotest"))
                .args(["rootfs", "path", &spec])
                .env("ISOTEST_CACHE", &cache)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut paths: Vec<String> = Vec::new();
    let mut log = String::new();
    for o in &outputs {
        assert!(o.status.success(), "{}", stderr(o));
        paths.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
        log.push_str(&stderr(o));
    }
    assert_eq!(builds(&log), 1, "{log}");
    paths.dedup();
    assert_eq!(paths.len(), 1, "{paths:?}");
    check_small_tree(Path::new(&paths[0]));
}

/// A plain tar of many small files: slow enough to unpack that a kill lands midway.
fn many_files_tar(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let data = vec![7u8; 4096];
    for i in 0..20_000 {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, format!("d{}/f{i}", i % 100), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap().sync_all().unwrap();
}

#[test]
fn a_build_killed_midway_is_cleaned_up_and_redone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.tar");
    many_files_tar(&file);
    let cache = dir.path().join("cache");
    let entries = cache.join("rootfs");
    let spec = format!("tar:{}", file.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_isotest"))
        .args(["rootfs", "path", &spec])
        .env("ISOTEST_CACHE", &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill -9 once the unpacker has written a few hundred files.
    let start = Instant::now();
    let tmp = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no build started"
        );
        let tmp = fs::read_dir(&entries).ok().and_then(|r| {
            r.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains(".tmp-"))
        });
        if let Some(tmp) = tmp {
            let written = fs::read_dir(tmp.join("rootfs/d0"))
                .map(|r| r.count())
                .unwrap_or(0);
            if written >= 5 {
                break tmp;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(tmp.exists(), "the killed build left nothing to clean up");
    let listed = isotest(&cache, &["rootfs", "list"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&spec));

    let (lower, log) = path_of(&cache, &spec);
    assert!(log.contains("left by an interrupted build"), "{log}");
    assert_eq!(builds(&log), 1);
    assert!(!tmp.exists());
    assert_eq!(fs::read_dir(lower.join("d99")).unwrap().count(), 200);
}

#[test]
fn an_entry_without_its_marker_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.tar");
    fs::write(&file, small_tar()).unwrap();
    let cache = dir.path().join("cache");
    let spec = format!("tar:{}", file.display());
    let (lower, _) = path_of(&cache, &spec);
    fs::remove_file(lower.parent().unwrap().join("complete")).unwrap();
    fs::remove_file(lower.join("etc/os-release")).unwrap();
    let listed = isotest(&cache, &["rootfs", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("(incomplete)"));
    let (again, log) = path_of(&cache, &spec);
    assert_eq!(again, lower);
    assert!(log.contains("removing incomplete cache entry"), "{log}");
    assert_eq!(builds(&log), 1, "{log}");
    check_small_tree(&again);
}

#[test]
fn list_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.tar");
    fs::write(&file, small_tar()).unwrap();
    let cache = dir.path().join("cache");
    let spec = format!("tar:{}", file.display());
    let (lower, _) = path_of(&cache, &spec);
    let list = String::from_utf8(isotest(&cache, &["rootfs", "list"]).stdout).unwrap();
    assert!(
        list.contains(&spec) && list.contains(&lower.display().to_string()),
        "{list}"
    );
    let kept = isotest(&cache, &["rootfs", "prune"]);
    assert!(kept.status.success() && kept.stdout.is_empty());
    let dry = isotest(&cache, &["rootfs", "prune", "--all", "--dry-run"]);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would remove"));
    assert!(lower.exists());
    let pruned = isotest(&cache, &["rootfs", "prune", "--all"]);
    assert!(String::from_utf8_lossy(&pruned.stdout).contains(&spec));
    assert!(!lower.exists());
}

#[test]
fn host_gives_a_skeleton_and_the_dirs_to_bind() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, _) = path_of(dir.path(), "host");
    assert!(lower.join("proc").is_dir() && lower.join("tmp").is_dir());
    match fs::symlink_metadata("/usr") {
        Ok(m) if m.is_dir() => {
            assert!(lower.join("usr").is_dir());
            assert_eq!(fs::read_dir(lower.join("usr")).unwrap().count(), 0);
        }
        _ => {}
    }
    if fs::symlink_metadata("/bin")
        .unwrap()
        .file_type()
        .is_symlink()
    {
        assert_eq!(
            fs::read_link(lower.join("bin")).unwrap(),
            fs::read_link("/bin").unwrap()
        );
    }
}

#[test]
fn debian_bookworm_builds_with_the_hosts_builder_and_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (lower, log) = path_of(&cache, "debian:bookworm");
    assert_eq!(builds(&log), 1, "{log}");
    assert!(log.contains("isotest: running "), "{log}");
    assert!(lower.join("usr/bin/apt-get").exists(), "{log}");
    assert!(fs::read_to_string(lower.join("etc/os-release"))
        .unwrap()
        .contains("bookworm"));
    let leftover: Vec<_> = fs::read_dir(lower.join("var/lib/apt/lists"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "partial" && n != "lock")
        .collect();
    assert!(leftover.is_empty(), "apt lists left: {leftover:?}");
    let debs = fs::read_dir(lower.join("var/cache/apt/archives"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
        .count();
    assert_eq!(debs, 0);
    // Same spec, same entry, no second build; `debian:12` is the same release.
    let (again, log) = path_of(&cache, "debian:12");
    assert_eq!((again, builds(&log)), (lower, 0));
}

#[test]
fn an_unreachable_mirror_fails_fast_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_isotest"))
        .args(["rootfs", "path", "debian:bookworm"])
        .env("ISOTEST_CACHE", dir.path())
        .env("ISOTEST_MIRROR", "http://127.0.0.1:9/debian")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(start.elapsed() < Duration::from_secs(10));
    let e = stderr(&o);
    for part in [
        "http://127.0.0.1:9/debian",
        "ISOTEST_MIRROR",
        "ISOTEST_ROOTFS",
    ] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }
    // Nothing half-built stays behind.
    let entries = dir.path().join("rootfs");
    let left: Vec<_> = fs::read_dir(entries)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_specs_name_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let not_dir = dir.path().join("file");
    fs::write(&not_dir, "x").unwrap();
    fs::set_permissions(&not_dir, fs::Permissions::from_mode(0o644)).unwrap();
    let not_dir = not_dir.display().to_string();
    for (spec, expected) in [
        ("/no/such/rootfs", "/no/such/rootfs does not exist"),
        ("dir:/no/such/rootfs", "/no/such/rootfs does not exist"),
        (&*format!("dir:{not_dir}"), "is not a directory"),
        (&*not_dir, "is not a directory"),
        (
            "tar:/no/such/archive.tar.zst",
            "/no/such/archive.tar.zst cannot be read",
        ),
        ("ubunt:jammy", "unknown root filesystem spec"),
        ("ubuntu:bionic", "unknown ubuntu suite \"bionic\""),
    ] {
        let o = isotest(dir.path(), &["rootfs", "path", spec]);
        assert!(!o.status.success(), "{spec} accepted");
        let e = stderr(&o);
        assert!(
            e.contains(spec) || e.contains(&spec[4..]),
            "{spec} not named: {e}"
        );
        assert!(e.contains(expected), "{spec}: {e}");
    }
    let e = isotest::rootfs::resolve("nonsense")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"nonsense\"") && e.contains("debian:bookworm") && e.contains("host"));
}
