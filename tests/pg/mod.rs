//! A private PostgreSQL cluster for a test: `initdb` into a temporary directory, `postgres` on a free loopback port (as the `postgres` user when the test runs as root, which PostgreSQL refuses), stopped by its PID when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser's name and password in every test cluster.
pub const USER: &str = "messnetz";
pub const PASSWORD: &str = "pw-Zq8r-not-to-be-printed";

/// Debian's server binaries (the newest installed major version).
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("bin").join("initdb").exists())
        .collect();
    versions.sort();
    versions.last().expect("a PostgreSQL version with initdb").join("bin").join(name)
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    // `id -u` keeps the tests free of unsafe code and extra crates.
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// A command run as the cluster's owner: `postgres` under root, the test's own user otherwise.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub struct Cluster {
    pub port: u16,
    dir: tempfile::TempDir,
    pid: Option<i32>,
    durable: bool,
}

impl Cluster {
    /// initdb (password authentication over TCP) and start; panics with the log if it fails.
    /// For tests: no fsync (see [`Self::start_durable`]).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Like [`Self::start`] with PostgreSQL's durable defaults (fsync, synchronous commit), for measurements.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("messnetz-pg").tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown the cluster's directory to postgres");
            // The temp dir's parents must let postgres in.
            let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        }
        let out = as_owner(&bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut cluster = Self { port: free_port(), dir, pid: None, durable };
        cluster.resume();
        cluster
    }

    /// Start the server (again) on its data directory and port; panics with the log if it fails.
    pub fn resume(&mut self) {
        let (port, data, log) = (self.port, self.dir.path().join("data"), self.dir.path().join("log"));
        let out = as_owner(&bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200 {}",
                self.dir.path().display(),
                // Measurements see where the server's time goes (pg_stat_statements).
                if self.durable {
                    "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
                } else {
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                }
            ))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()));
    }

    /// The URL of database `db`, with the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Run SQL in database `db` with psql; returns its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new empty database; returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Stop the server (fast shutdown) and wait for it; it can be started again with [`Self::resume`].
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            let running = || {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .map(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
                    .unwrap_or(false)
            };
            while running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
