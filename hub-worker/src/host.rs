//! Facts about the machine the worker runs on: memory and cores, for capacity reports
//! and for refusing models that do not fit.

/// Reads a `kB` field of `/proc/meminfo` as bytes.
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Memory available for new allocations (`MemAvailable`), if the OS says.
pub fn mem_available_bytes() -> Option<u64> {
    meminfo("MemAvailable")
}

/// Total memory (`MemTotal`), if the OS says.
pub fn mem_total_bytes() -> Option<u64> {
    meminfo("MemTotal")
}

/// Cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The CPU's model name and feature flags, from `/proc/cpuinfo` (empty elsewhere).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuIdentity {
    pub model: String,
    /// Sorted.
    pub flags: Vec<String>,
}

/// This machine's [`CpuIdentity`] (first processor entry).
pub fn cpu_identity() -> CpuIdentity {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let mut flags: Vec<String> = field("flags")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    flags.sort();
    CpuIdentity {
        model: field("model name").unwrap_or_default(),
        flags,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_meminfo() {
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(super::mem_total_bytes().unwrap() > 0);
            assert!(super::mem_available_bytes().unwrap() > 0);
        }
        assert!(super::cores() >= 1);
    }
}
