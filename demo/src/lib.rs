//! A tiny "installer" of the kind isotest is for: it writes into `/etc`, creates a system user
//! and a state directory — things a plain unit test cannot do on a developer's machine.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

/// Installs `myapp`: a config file, a system user and its state directory.
pub fn install(listen_port: u16) -> io::Result<()> {
    fs::create_dir_all("/etc/myapp")?;
    fs::write(
        "/etc/myapp/myapp.conf",
        format!("listen = 127.0.0.1:{listen_port}\n"),
    )?;
    if !user_exists("myapp")? {
        run("useradd", &["--system", "--no-create-home", "myapp"])?;
    }
    fs::create_dir_all("/var/lib/myapp")?;
    run("chown", &["myapp:myapp", "/var/lib/myapp"])?;
    Ok(())
}

/// Removes what [`install`] made.
pub fn uninstall() -> io::Result<()> {
    if Path::new("/etc/myapp").exists() {
        fs::remove_dir_all("/etc/myapp")?;
    }
    if user_exists("myapp")? {
        run("userdel", &["myapp"])?;
    }
    if Path::new("/var/lib/myapp").exists() {
        fs::remove_dir_all("/var/lib/myapp")?;
    }
    Ok(())
}

fn user_exists(name: &str) -> io::Result<bool> {
    Ok(Command::new("id").arg(name).output()?.status.success())
}

fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let status = Command::new(program).args(args).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {args:?} failed: {status}"
        )))
    }
}
