//! A throw-away PostgreSQL server for tests: Debian's `postgresql` binaries (`initdb`, `pg_ctl`)
//! on a temporary directory and a free loopback port. Never a mock. Stopped when dropped.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the
//! Debian package creates (through `runuser`).
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `SLUICE_PG_BIN`.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BIN") {
        return Ok(dir.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL is not installed (run scripts/postgres.sh): /usr/lib/postgresql: {e}"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql (run scripts/postgres.sh)".into())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl TestPostgres {
    /// Initialises and starts a server; waits until it accepts connections.
    pub fn start() -> Result<TestPostgres, String> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("sluice-pg-").tempdir().map_err(|e| e.to_string())?;
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(dir.path()))?;
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let pg = TestPostgres { dir, bin, as_postgres, port };
        let data = pg.data();
        run(pg.command("initdb").args(["-A", "trust", "-U", "sluice", "-E", "UTF8", "--no-sync", "-D"]).arg(&data))?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            pg.dir.path().display()
        );
        run(pg
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(pg.dir.path().join("log"))
            .arg("-D")
            .arg(&data)
            .arg("start"))
        .map_err(|e| {
            format!("{e}\nserver log:\n{}", std::fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default())
        })?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }

    /// The URL of a database on this server, created on first use.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://sluice@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        run(self.command("createdb").args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "sluice", name]))?;
        Ok(self.url(name))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(&data)
            .arg("stop")
            .stdout(Stdio::null())
            .status();
    }
}

fn run(c: &mut Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{:?}: {e}", c.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} {:?} failed ({}): {}{}",
            c.get_program(),
            c.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
