//! A throwaway PostgreSQL server for a test: `initdb` into a fresh directory, `postgres` on a free loopback port,
//! and everything stopped and removed when the [`PgServer`] is dropped. It runs the machine's own PostgreSQL
//! binaries (`CONVERGE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`), as the `postgres` user when the
//! tests run as root (PostgreSQL refuses to run as root). No mock: the tests talk to the real server.
//!
//! Where there are no binaries, [`PgServer::start`] says so loudly and returns `None`, and the test does nothing
//! — unless `CONVERGE_REQUIRE_POSTGRES` is set (CI sets it), when that is a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running server; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Why no server could be started.
#[derive(Debug)]
pub struct PgError(pub String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CONVERGE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, PgError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| PgError(format!("finding a free port: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| PgError(e.to_string()))
}

impl PgServer {
    /// Start a server, or `None` (said on stderr) where the machine has no PostgreSQL binaries.
    ///
    /// # Panics
    /// No binaries while `CONVERGE_REQUIRE_POSTGRES` is set, or the server does not start.
    #[allow(clippy::panic)]
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`PgServer::start`] with more `NAME=VALUE` server settings, applied after the defaults (a benchmark asks
    /// for `fsync=on` and `synchronous_commit=on`, the durability a user runs with).
    ///
    /// # Panics
    /// As [`PgServer::start`].
    #[allow(clippy::panic)]
    pub fn start_with(settings: &[&str]) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            let message = "PostgreSQL tests NOT RUN: no PostgreSQL binaries (install the server package, or set \
                           CONVERGE_PG_BIN to its bin directory)";
            assert!(std::env::var_os("CONVERGE_REQUIRE_POSTGRES").is_none(), "{message}");
            eprintln!("{message}");
            return None;
        };
        match Self::start_in(&bin, settings) {
            Ok(s) => Some(s),
            Err(e) => panic!("starting PostgreSQL from {}: {e}", bin.display()),
        }
    }

    fn start_in(bin: &Path, settings: &[&str]) -> Result<Self, PgError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "converge-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| PgError(e.to_string()))?;
        let as_postgres = is_root();
        let server = Self { bin: bin.to_owned(), dir, port: free_port()?, as_postgres };
        if as_postgres {
            server.run(Command::new("chown").args(["postgres:postgres"]).arg(&server.dir))?;
        }
        let data = server.dir.join("data");
        let initdb = server.pg("initdb");
        server.run(server.as_user(initdb).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "converge",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]))?;
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            server.port,
            server.dir.display()
        );
        for s in settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        let log = server.dir.join("log");
        server.run(
            server
                .as_user(server.pg("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-o", &options, "-w", "-t", "30", "start"]),
        )?;
        Ok(server)
    }

    fn pg(&self, tool: &str) -> String {
        self.bin.join(tool).display().to_string()
    }

    fn as_user(&self, program: String) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, cmd: &mut Command) -> Result<(), PgError> {
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| PgError(format!("{cmd:?}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            Err(PgError(format!(
                "{cmd:?}: {}\n{}{}\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// A fresh, empty database on this server; its URL.
    ///
    /// # Panics
    /// The database cannot be created.
    #[allow(clippy::panic)]
    pub fn database(&self, name: &str) -> String {
        let name: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let name: String = name.chars().take(60).collect();
        let port = self.port.to_string();
        let created =
            self.run(Command::new(self.pg("createdb")).args(["-h", "127.0.0.1", "-p", &port, "-U", "converge", &name]));
        if let Err(e) = created {
            panic!("creating database {name}: {e}");
        }
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://converge@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let mut stop = self.as_user(self.pg("pg_ctl"));
        stop.arg("-D").arg(&data).args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
