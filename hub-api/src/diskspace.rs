//! The free-space reserve: writes that would leave less than the reserve free
//! on a filesystem the hub writes to (the local object store, the private
//! PostgreSQL cluster) are refused with 507 `insufficient_storage`, so
//! PostgreSQL always keeps room for its WAL and its shutdown checkpoint, and
//! a full disk never stops the hub from starting again.

use std::path::{Path, PathBuf};

/// Default reserve, in MiB (`HUB_DISK_RESERVE_MB`).
pub const DEFAULT_RESERVE_MB: u64 = 1024;

/// A reserve over one or more directories (each checked on its own filesystem).
#[derive(Debug, Clone)]
pub struct Reserve {
    dirs: Vec<PathBuf>,
    bytes: u64,
}

/// A directory whose filesystem is below the reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub dir: PathBuf,
    pub free: u64,
    pub reserve: u64,
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the disk holding {} has {} free, below the reserve of {}",
            self.dir.display(),
            human(self.free),
            human(self.reserve)
        )
    }
}

/// Bytes as MiB/GiB for messages.
pub fn human(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b >= 10 << 30 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b / MIB)
    }
}

/// Free bytes for unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

impl Reserve {
    /// A reserve of `bytes` over `dirs` (0 bytes: no reserve).
    pub fn new(dirs: Vec<PathBuf>, bytes: u64) -> Self {
        Self { dirs, bytes }
    }

    /// No reserve at all.
    pub fn none() -> Self {
        Self {
            dirs: vec![],
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The first directory where writing `incoming` more bytes would eat into
    /// the reserve (a directory that cannot be inspected is skipped: the write
    /// itself will tell).
    pub fn shortage(&self, incoming: u64) -> Option<Shortage> {
        if self.bytes == 0 {
            return None;
        }
        self.dirs.iter().find_map(|d| {
            let free = free_bytes(d).ok()?;
            (free < self.bytes.saturating_add(incoming)).then(|| Shortage {
                dir: d.clone(),
                free,
                reserve: self.bytes,
            })
        })
    }

    /// `Err(StorageFull)` when `incoming` bytes would eat into the reserve.
    pub fn check(&self, incoming: u64) -> std::io::Result<()> {
        match self.shortage(incoming) {
            None => Ok(()),
            Some(s) => {
                // The path is for the operator's log, not for the client.
                tracing::warn!(shortage = %s, "write refused: disk space reserve");
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "free disk space is below the hub's reserve",
                ))
            }
        }
    }
}

/// Checks a write in progress every [`Guard::STEP`] bytes, so a stream of
/// unknown length stops before it eats into the reserve.
#[derive(Debug)]
pub struct Guard {
    reserve: Option<Reserve>,
    since_check: u64,
}

impl Guard {
    /// How many bytes are written between two checks.
    pub const STEP: u64 = 64 << 20;

    /// Checks once at the start (with the declared size when known).
    pub fn start(reserve: Option<&Reserve>, declared: Option<u64>) -> std::io::Result<Self> {
        if let Some(r) = reserve {
            r.check(declared.unwrap_or(0))?;
        }
        Ok(Self {
            reserve: reserve.cloned(),
            since_check: 0,
        })
    }

    /// Counts `n` written bytes; re-checks every [`Guard::STEP`].
    pub fn wrote(&mut self, n: u64) -> std::io::Result<()> {
        self.since_check += n;
        if self.since_check >= Self::STEP {
            self.since_check = 0;
            if let Some(r) = &self.reserve {
                r.check(0)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_bytes_of_a_real_dir() {
        let d = tempfile::tempdir().unwrap();
        assert!(free_bytes(d.path()).unwrap() > 0);
    }

    #[test]
    fn reserve_above_free_space_refuses() {
        let d = tempfile::tempdir().unwrap();
        let free = free_bytes(d.path()).unwrap();
        // A reserve larger than what is free: any write is refused, with a message
        // that names the directory.
        let r = Reserve::new(vec![d.path().to_path_buf()], free + (1 << 30));
        let e = r.check(0).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        assert!(!e.to_string().contains(&d.path().display().to_string()));
        let s = r.shortage(0).unwrap();
        assert_eq!(s.dir, d.path());
        assert!(s.to_string().contains(&d.path().display().to_string()));
        // A small reserve lets small writes through but not one larger than what is free.
        let r = Reserve::new(vec![d.path().to_path_buf()], 1);
        assert!(r.check(1).is_ok());
        assert!(r.check(free + (1 << 30)).is_err());
        // No reserve: nothing is checked.
        assert!(Reserve::none().check(u64::MAX).is_ok());
    }

    #[test]
    fn guard_checks_every_step() {
        let d = tempfile::tempdir().unwrap();
        let free = free_bytes(d.path()).unwrap();
        let r = Reserve::new(vec![d.path().to_path_buf()], free + (1 << 30));
        assert!(Guard::start(Some(&r), None).is_err());
        let mut g = Guard {
            reserve: Some(r),
            since_check: 0,
        };
        assert!(g.wrote(Guard::STEP - 1).is_ok());
        assert!(g.wrote(1).is_err());
    }
}
