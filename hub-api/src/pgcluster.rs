//! A private PostgreSQL cluster made from the machine's server binaries: the
//! single-node default of `hub-api serve`, and the throwaway cluster of the
//! test kit. It listens only on a unix socket in its own directory.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running (or attached) private cluster.
#[derive(Debug)]
pub struct PgCluster {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// Whether this process started the server (and so stops it).
    owned: bool,
}

/// Finds the directory holding `initdb`/`pg_ctl`: `PATH` first, then the
/// newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                candidates.push(dir);
                break;
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((v, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, b)) = versions.pop() {
            candidates.push(b);
        }
    }
    candidates.into_iter().next()
}

fn is_root() -> bool {
    // SAFETY-free check: /proc/self/status Uid line, avoiding a libc dependency.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// Finds the server binaries, installing them with apt when running as root.
pub fn ensure_binaries() -> anyhow::Result<PathBuf> {
    if let Some(b) = find_bin_dir() {
        return Ok(b);
    }
    if is_root() && Path::new("/usr/bin/apt-get").exists() {
        eprintln!("PostgreSQL server binaries not found; installing them with apt-get");
        let _ = Command::new("apt-get").arg("update").status();
        let st = Command::new("apt-get")
            .args(["install", "-y", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if st.success() {
            if let Some(b) = find_bin_dir() {
                return Ok(b);
            }
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found: install them \
         (Debian: apt-get install -y postgresql) or set DATABASE_URL to an existing database"
    )
}

impl PgCluster {
    /// Starts (creating if needed) a cluster in `data_dir`, or attaches to one
    /// already running there (another `hub-api` process on the same data dir).
    pub fn start(data_dir: &Path, fast_unsafe: bool) -> anyhow::Result<Self> {
        let bin_dir = ensure_binaries()?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        let run_as = if is_root() {
            Some(postgres_ids().context(
                "running as root, PostgreSQL must run as the 'postgres' user, which does not exist \
                 (apt-get install -y postgresql creates it)",
            )?)
        } else {
            None
        };
        // Unix socket paths are limited to ~107 bytes.
        // Beside the data directory: initdb wants an empty directory.
        let mut socket_dir = data_dir.with_file_name(format!(
            "{}-run",
            data_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        if socket_dir.as_os_str().len() > 80 {
            let h = {
                use sha2::Digest;
                hex::encode(&sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes())[..6])
            };
            socket_dir = std::env::temp_dir().join(format!("paddock-pg-{h}"));
        }
        std::fs::create_dir_all(&socket_dir)?;
        let mut cluster = Self {
            data_dir: data_dir.clone(),
            socket_dir,
            port: 5432,
            bin_dir,
            run_as,
            owned: false,
        };
        cluster.chown_tree(&cluster.socket_dir.clone())?;
        if !data_dir.join("PG_VERSION").exists() {
            cluster.chown_tree(&data_dir)?;
            // Let the postgres user reach a data dir that lives under root's folders.
            cluster.open_parents(&data_dir);
            let out = cluster
                .command("initdb")
                .args(["-D"])
                .arg(&data_dir)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
                .output()
                .context("running initdb")?;
            if !out.status.success() {
                bail!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        } else {
            cluster.open_parents(&data_dir);
        }
        if cluster.is_running() {
            return Ok(cluster);
        }
        let mut opts = format!(
            "-k {} -c listen_addresses='' -p {} -c max_connections=300 -c shared_buffers=128MB",
            cluster.socket_dir.display(),
            cluster.port
        );
        if fast_unsafe {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let log = data_dir.join("server.log");
        let out = cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(&data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            bail!(
                "PostgreSQL did not start: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        cluster.owned = true;
        Ok(cluster)
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin_dir.join(tool));
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid);
            c.env("HOME", "/tmp");
        }
        c.current_dir("/");
        c
    }

    fn chown_tree(&self, dir: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", dir.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// Makes each parent folder traversable (o+x) so the postgres user can reach its data.
    fn open_parents(&self, dir: &Path) {
        if self.run_as.is_none() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let mut cur = dir.parent();
        while let Some(p) = cur {
            if let Ok(md) = std::fs::metadata(p) {
                let mode = md.permissions().mode();
                if mode & 0o001 == 0 {
                    let _ =
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011));
                }
            }
            cur = p.parent();
        }
    }

    pub fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Connection URL for a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        let host: String =
            url::form_urlencoded::byte_serialize(self.socket_dir.as_os_str().as_encoded_bytes())
                .collect();
        format!(
            "postgres://postgres@localhost:{}/{database}?host={host}",
            self.port
        )
    }

    /// Stops the server if this process started it (fast shutdown: clean, no recovery needed).
    pub fn stop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"])
            .output();
        self.owned = false;
    }

    /// Leaves the server running when this value is dropped (another process
    /// takes over its shutdown).
    pub fn detach(&mut self) {
        self.owned = false;
    }

    /// A shell command that stops the server at once (SIGQUIT to the postmaster),
    /// for a watcher process.
    pub fn stop_command_line(&self) -> String {
        format!(
            "kill -QUIT $(head -1 '{}/postmaster.pid') 2>/dev/null",
            self.data_dir.display()
        )
    }

    /// Stops regardless of who started it (test kit teardown).
    pub fn stop_immediate(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        self.owned = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
