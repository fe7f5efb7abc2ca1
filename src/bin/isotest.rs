//! The isotest command line. The work is done by the library; this file parses and prints.

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

/// Sandboxes are made of Linux namespaces: elsewhere the command only says so.
#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("isotest requires Linux (this is {})", std::env::consts::OS);
    std::process::ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod linux {

    use std::process::ExitCode;
    use std::time::{Duration, SystemTime};

    use clap::{Args, Parser, Subcommand};
    use isotest::rootfs::{self, cache};

    /// Run tests in fresh Linux namespaces on a copy-on-write root filesystem.
    #[derive(Debug, Parser)]
    #[command(name = "isotest", version, propagate_version = true)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, Subcommand)]
    enum Command {
        /// Run a program from a root filesystem in a fresh sandbox
        Run(isotest::cli::RunArgs),
        /// Check that this machine can run sandboxes, and say how to fix what is missing
        Doctor(isotest::doctor::DoctorArgs),
        /// Manage the root filesystems sandboxes start from.
        #[command(subcommand)]
        Rootfs(RootfsCommand),
    }

    #[derive(Debug, Subcommand)]
    enum RootfsCommand {
        /// Build (or unpack) a root filesystem into the cache, unless it is there already.
        ///
        /// SPEC is one of: ubuntu:jammy|noble|focal|22.04|24.04|20.04, debian:bookworm|trixie|
        /// bullseye|12|13|11 (optionally +PACKAGE,...), tar:PATH, dir:PATH, an absolute path, or
        /// host. Relative paths in tar: and dir: are taken from the current directory.
        Build {
            /// The root filesystem spec.
            spec: String,
            /// Build again even if the cache has an entry.
            #[arg(long)]
            rebuild: bool,
        },
        /// List the cache's entries: spec, size, age, last use and path.
        List,
        /// Print the lower-layer directory of SPEC, building it first if needed.
        Path {
            /// The root filesystem spec (see `isotest rootfs build --help`).
            spec: String,
        },
        /// Remove cache entries.
        ///
        /// Without options, removes entries not used for 30 days, plus incomplete entries and
        /// leftovers of interrupted builds. Entries being built by another process are skipped.
        /// Do not prune an entry a running sandbox uses.
        Prune(PruneArgs),
    }

    #[derive(Debug, Args)]
    struct PruneArgs {
        /// Remove every entry (and the memoised archive hashes).
        #[arg(long)]
        all: bool,
        /// Remove entries not used for this many days.
        #[arg(long, value_name = "N", default_value_t = 30)]
        unused_days: u64,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        let result = match cli.command {
            Command::Run(args) => std::process::exit(isotest::cli::run(args)),
            Command::Doctor(args) => std::process::exit(isotest::doctor::main(args)),
            Command::Rootfs(cmd) => rootfs_command(cmd),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("isotest: error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn rootfs_command(cmd: RootfsCommand) -> isotest::Result<()> {
        match cmd {
            RootfsCommand::Build { spec, rebuild } => {
                let spec = absolutize(&spec);
                let parsed = rootfs::Spec::parse(&spec)?;
                let resolved = cache::Cache::from_env()?.resolve(&spec, &parsed, rebuild)?;
                println!("{}", resolved.lower.display());
            }
            RootfsCommand::Path { spec } => {
                let resolved = rootfs::resolve_full(&absolutize(&spec))?;
                println!("{}", resolved.lower.display());
            }
            RootfsCommand::List => {
                let now = SystemTime::now();
                println!(
                    "{:<28} {:>8} {:>8} {:>8}  PATH",
                    "SPEC", "SIZE", "AGE", "USED"
                );
                for e in cache::list()? {
                    let spec = if e.complete {
                        e.spec.clone()
                    } else {
                        format!("{} (incomplete)", e.spec)
                    };
                    println!(
                        "{:<28} {:>8} {:>8} {:>8}  {}",
                        spec,
                        format!("{}M", e.size / 1_000_000),
                        age(now, e.created),
                        age(now, e.last_used),
                        e.lower.display()
                    );
                }
            }
            RootfsCommand::Prune(args) => {
                let opts = cache::Prune {
                    all: args.all,
                    unused_for: Duration::from_secs(args.unused_days * 24 * 3600),
                    dry_run: args.dry_run,
                };
                let verb = if args.dry_run {
                    "would remove"
                } else {
                    "removed"
                };
                for e in cache::prune(&opts)? {
                    println!("{verb} {} ({})", e.key, e.spec);
                }
            }
        }
        Ok(())
    }

    /// Makes a relative `tar:` or `dir:` path absolute against the current directory.
    fn absolutize(spec: &str) -> String {
        match std::env::current_dir() {
            Ok(cwd) => rootfs::absolutize(spec, &cwd),
            Err(_) => spec.to_string(),
        }
    }

    fn age(now: SystemTime, then: SystemTime) -> String {
        let s = now.duration_since(then).unwrap_or_default().as_secs();
        match s {
            0..=119 => format!("{s}s"),
            120..=7199 => format!("{}m", s / 60),
            7200..=172_799 => format!("{}h", s / 3600),
            _ => format!("{}d", s / 86_400),
        }
    }
}
