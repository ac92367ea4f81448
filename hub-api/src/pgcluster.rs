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
    /// Whether this process owns the server (started it, or adopted it from a
    /// process that is gone) and so stops it, and restarts it if it dies.
    owned: bool,
    /// The owner's lock (`<data-dir>.lock`, an exclusive `flock`): held by the
    /// one process that owns the server. The kernel releases it when that
    /// process dies, even by `kill -9`, so a running server whose lock is free
    /// is an orphan that the next process adopts.
    lock: Option<std::fs::File>,
    /// `postgres` options of `pg_ctl start`.
    opts: String,
}

/// Free space below which the private cluster is not started (it could not
/// write its WAL or its checkpoint); the message says what to do.
pub const MIN_START_FREE: u64 = 32 << 20;

/// Whether `pid` is a zombie: killed, not yet reaped by its parent (which
/// may never happen when PID 1 does not reap). PostgreSQL's own stale-lock
/// check (`kill(pid, 0)`) takes a zombie for a live postmaster.
fn pid_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
        })
        .is_some_and(|c| c == 'Z' || c == 'X')
}

/// Processes attached to the System V shared memory segment `shmid` (from
/// `/proc/sysvipc/shm`); 0 when there is no such segment.
fn shm_attached(shmid: u64) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/sysvipc/shm") else {
        return 0;
    };
    table
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1)?.parse::<u64>().ok()? == shmid).then(|| f.get(6)?.parse().ok())?
        })
        .unwrap_or(0)
}

/// Whether the postmaster of a pid file is alive.
fn pid_alive(pid: u32) -> bool {
    // A zombie (killed, not yet reaped) counts as dead; so does a pid reused by
    // another program.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            let state = after.and_then(|r| r.chars().next());
            let comm = stat
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map(|(c, _)| c);
            !matches!(state, Some('Z') | Some('X') | None)
                && comm.is_none_or(|c| c.starts_with("postgres") || c.starts_with("postmaster"))
        }
        Err(_) => false,
    }
}

/// The pid written on the first line of a postmaster (or socket) lock file.
fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .trim_start_matches('-')
        .parse()
        .ok()
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
        let mut opts = format!(
            "-k {} -c listen_addresses='' -p {} -c max_connections=300 -c shared_buffers=128MB",
            socket_dir.display(),
            5432
        );
        if fast_unsafe {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let mut cluster = Self {
            data_dir: data_dir.clone(),
            socket_dir,
            port: 5432,
            bin_dir,
            run_as,
            owned: false,
            lock: None,
            opts,
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
        // Whoever holds the lock owns the server. Without it, another live
        // process (a running `serve`, an admin command) owns it: attach, and
        // leave it alone on exit. With it and a server already running, the
        // server is an orphan (its owner was killed): adopt it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if cluster.try_own()? {
                if cluster.is_running() {
                    tracing::info!(
                        data_dir = %cluster.data_dir.display(),
                        "adopting the private PostgreSQL cluster left running by a process that is gone"
                    );
                } else {
                    cluster.start_server()?;
                }
                return Ok(cluster);
            }
            if cluster.is_running() {
                return Ok(cluster);
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "the private PostgreSQL cluster in {} is owned by another process that \
                     has not started it within 60 s",
                    cluster.data_dir.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Takes the owner's lock if it is free; true when this process owns the server.
    fn try_own(&mut self) -> anyhow::Result<bool> {
        if self.lock.is_some() {
            return Ok(true);
        }
        let path = self.data_dir.with_extension("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {
                self.lock = Some(f);
                self.owned = true;
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
            }
        }
    }

    /// Whether this process owns the server.
    pub fn is_owner(&self) -> bool {
        self.owned
    }

    /// Removes the lock files of a postmaster killed by `kill -9` and left a
    /// zombie (PostgreSQL would take it for a live server and refuse to
    /// start). Only when no process is attached to its shared memory any
    /// more: a backend that outlived its postmaster still counts, and then
    /// the start waits (PostgreSQL itself handles a pid that is simply gone).
    fn clear_zombie_pid_files(&self) {
        let pidfile = self.data_dir.join("postmaster.pid");
        let Some(pid) = pid_in(&pidfile) else {
            return;
        };
        if !pid_zombie(pid) {
            return;
        }
        // Line 7: "<shmem key> <shmem id>".
        let shmid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.lines().nth(6).map(str::to_owned))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()));
        if shmid.is_some_and(|id| shm_attached(id) > 0) {
            return;
        }
        let socket_lock = self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port));
        for f in [pidfile, socket_lock] {
            if pid_in(&f) == Some(pid) {
                tracing::info!(file = %f.display(), pid, "removing the lock file of a dead postmaster");
                let _ = std::fs::remove_file(&f);
            }
        }
    }

    /// Starts the server (this process owns it). Refuses with one clear line
    /// when the disk is full.
    fn start_server(&mut self) -> anyhow::Result<()> {
        let free = crate::diskspace::free_bytes(&self.data_dir).ok();
        if let Some(free) = free.filter(|f| *f < MIN_START_FREE) {
            bail!(
                "PostgreSQL could not start: the disk holding {} has {} free (it needs at least \
                 {}); free space and start again",
                self.data_dir.display(),
                crate::diskspace::human(free),
                crate::diskspace::human(MIN_START_FREE)
            );
        }
        self.clear_zombie_pid_files();
        let log = self.data_dir.join("server.log");
        let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &self.opts, "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            // Only what this attempt logged.
            let text = std::fs::read(&log)
                .map(|b| {
                    String::from_utf8_lossy(&b[(log_len as usize).min(b.len())..]).into_owned()
                })
                .unwrap_or_default();
            if text.contains("No space left on device") {
                let free = crate::diskspace::free_bytes(&self.data_dir).unwrap_or(0);
                bail!(
                    "PostgreSQL could not start: the disk holding {} has {} free (No space left \
                     on device); free space and start again",
                    self.data_dir.display(),
                    crate::diskspace::human(free)
                );
            }
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            bail!(
                "PostgreSQL did not start: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.owned = true;
        Ok(())
    }

    /// Keeps the server running, for `serve` (call it every second or so):
    /// takes ownership when the owner is gone, and restarts an owned server
    /// whose postmaster died. Returns true when it (re)started the server.
    pub fn supervise(&mut self) -> anyhow::Result<bool> {
        if !self.try_own()? {
            return Ok(false);
        }
        if self.postmaster_alive() {
            return Ok(false);
        }
        tracing::warn!(
            data_dir = %self.data_dir.display(),
            "the private PostgreSQL server is not running; restarting it"
        );
        self.start_server()?;
        tracing::info!("the private PostgreSQL server is running again");
        Ok(true)
    }

    /// Whether the postmaster named in `postmaster.pid` is alive (no process spawned).
    pub fn postmaster_alive(&self) -> bool {
        pid_in(&self.data_dir.join("postmaster.pid")).is_some_and(pid_alive)
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
        if !self.postmaster_alive() {
            return false;
        }
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
        self.lock = None;
    }

    /// Leaves the server running when this value is dropped (another process
    /// takes over its shutdown).
    pub fn detach(&mut self) {
        self.owned = false;
        self.lock = None;
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
        self.lock = None;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
