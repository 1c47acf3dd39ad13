//! Statistics of a cgroup v2 directory from the controllers it has, in libcgroups' `Stats`
//! (and its units), for `metrics`.
//!
//! libcgroups' v2 manager reads every controller it knows and fails on the first file that
//! is missing; a controller's files exist only where the parent enabled it. systemd never
//! enables `hugetlb` (it does not manage it), so on a systemd node every container's Stats
//! failed with "hugetlb.2MB.events: No such file or directory". runc reads what the cgroup's
//! `cgroup.controllers` lists, and so does this; files a kernel may lack (`memory.peak`,
//! swap, pressure) count as zero.

use std::collections::HashMap;
use std::path::Path;

use libcgroups::stats::{
    BlkioDeviceStat, BlkioStats, CpuStats, HugeTlbStats, MemoryData, MemoryStats, PSIStats, Stats,
};

use crate::error::{Error, Result};

/// The statistics of the v2 cgroup at `dir`.
pub fn stats(dir: &Path) -> Result<Stats> {
    let controllers = read(&dir.join("cgroup.controllers"))?;
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    let mut stats = Stats {
        // cpu.stat is always there (usage); the throttling keys come with the controller.
        cpu: cpu(dir)?,
        ..Default::default()
    };
    if has("memory") {
        stats.memory = memory(dir)?;
    }
    if has("pids") {
        stats.pids = libcgroups::stats::pid_stats(dir)
            .map_err(|e| Error::Runtime(format!("pids stats of {}: {e}", dir.display())))?;
    }
    if has("io") {
        stats.blkio = io(dir)?;
    }
    if has("hugetlb") {
        stats.hugetlb = hugetlb(dir)?;
    }
    Ok(stats)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("read {}", path.display()), e))
}

/// A file the kernel may not have (config options, boot flags): None when absent.
fn optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

fn bad(path: &Path, what: &str) -> Error {
    Error::Runtime(format!("{}: {what}", path.display()))
}

/// `key value` lines.
fn flat_keyed(path: &Path, text: &str) -> Result<HashMap<String, u64>> {
    let mut map = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_ascii_whitespace();
        let (Some(k), Some(v), None) = (f.next(), f.next(), f.next()) else {
            return Err(bad(path, &format!("not `key value`: {line:?}")));
        };
        let v = v
            .parse()
            .map_err(|e| bad(path, &format!("{k}: {v:?}: {e}")))?;
        map.insert(k.to_string(), v);
    }
    Ok(map)
}

/// A single number, `max` being u64::MAX.
fn single(path: &Path, text: &str) -> Result<u64> {
    match text.trim() {
        "max" => Ok(u64::MAX),
        v => v.parse().map_err(|e| bad(path, &format!("{v:?}: {e}"))),
    }
}

fn pressure(path: &Path) -> Result<PSIStats> {
    if !path.exists() {
        return Ok(PSIStats::default());
    }
    libcgroups::stats::psi_stats(path).map_err(|e| bad(path, &e.to_string()))
}

fn cpu(dir: &Path) -> Result<CpuStats> {
    let path = dir.join("cpu.stat");
    let t = flat_keyed(&path, &read(&path)?)?;
    let get = |k: &str| t.get(k).copied().unwrap_or(0);
    let mut s = CpuStats::default();
    s.usage.usage_total = get("usage_usec");
    s.usage.usage_user = get("user_usec");
    s.usage.usage_kernel = get("system_usec");
    s.throttling.periods = get("nr_periods");
    s.throttling.throttled_periods = get("nr_throttled");
    s.throttling.throttled_time = get("throttled_usec");
    s.psi = pressure(&dir.join("cpu.pressure"))?;
    Ok(s)
}

/// `<prefix>.current`, `.max`, `.peak` and the `fail_event` count of `.events`; None when
/// the kernel has no `<prefix>.current` (no swap accounting).
fn memory_data(dir: &Path, prefix: &str, fail_event: &str) -> Result<Option<MemoryData>> {
    let file = |s: &str| dir.join(format!("{prefix}.{s}"));
    let Some(current) = optional(&file("current"))? else {
        return Ok(None);
    };
    let number = |s: &str| -> Result<u64> {
        match optional(&file(s))? {
            Some(t) => single(&file(s), &t),
            None => Ok(0),
        }
    };
    let events = match optional(&file("events"))? {
        Some(t) => flat_keyed(&file("events"), &t)?,
        None => HashMap::new(),
    };
    Ok(Some(MemoryData {
        usage: single(&file("current"), &current)?,
        limit: number("max")?,
        max_usage: number("peak")?,
        fail_count: events.get(fail_event).copied().unwrap_or(0),
    }))
}

fn memory(dir: &Path) -> Result<MemoryStats> {
    let path = dir.join("memory.stat");
    Ok(MemoryStats {
        memory: memory_data(dir, "memory", "oom")?.unwrap_or_default(),
        memswap: memory_data(dir, "memory.swap", "fail")?.unwrap_or_default(),
        hierarchy: true,
        stats: flat_keyed(&path, &read(&path)?)?,
        psi: pressure(&dir.join("memory.pressure"))?,
        ..Default::default()
    })
}

/// io.stat: `MAJ:MIN rbytes=… wbytes=… rios=… wios=… …` per device.
fn io(dir: &Path) -> Result<BlkioStats> {
    let path = dir.join("io.stat");
    let mut s = BlkioStats::default();
    for line in read(&path)?.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_ascii_whitespace();
        let dev = f.next().unwrap_or_default();
        let (major, minor) = dev
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| bad(&path, &format!("device {dev:?}")))?;
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(bad(&path, &format!("not key=value: {kv:?}")));
            };
            let (list, op) = match k {
                "rbytes" => (&mut s.service_bytes, "read"),
                "wbytes" => (&mut s.service_bytes, "write"),
                "rios" => (&mut s.serviced, "read"),
                "wios" => (&mut s.serviced, "write"),
                _ => continue,
            };
            let value = v.parse().map_err(|e| bad(&path, &format!("{k}: {e}")))?;
            list.push(BlkioDeviceStat {
                major,
                minor,
                op_type: Some(op.to_string()),
                value,
            });
        }
    }
    s.psi = pressure(&dir.join("io.pressure"))?;
    Ok(s)
}

fn hugetlb(dir: &Path) -> Result<HashMap<String, HugeTlbStats>> {
    let sizes = libcgroups::stats::supported_page_sizes()
        .map_err(|e| Error::Runtime(format!("huge page sizes: {e}")))?;
    let mut all = HashMap::new();
    for size in sizes {
        let file = |s: &str| dir.join(format!("hugetlb.{size}.{s}"));
        let Some(current) = optional(&file("current"))? else {
            continue;
        };
        let fail_count = match optional(&file("events"))? {
            Some(t) => flat_keyed(&file("events"), &t)?
                .get("max")
                .copied()
                .unwrap_or(0),
            None => 0,
        };
        all.insert(
            size.clone(),
            HugeTlbStats {
                usage: single(&file("current"), &current)?,
                max_usage: 0,
                fail_count,
            },
        );
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("cg-v2-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }

        fn put(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A systemd scope: cpu, io, memory and pids, never hugetlb (whose files are absent).
    #[test]
    fn a_systemd_scope_without_hugetlb_has_stats() {
        let d = Scratch::new("scope");
        d.put("cgroup.controllers", "cpuset cpu io memory pids\n");
        d.put(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 20\n",
        );
        d.put(
            "cpu.pressure",
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        d.put("memory.current", "4096\n");
        d.put("memory.max", "max\n");
        d.put("memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n");
        d.put("memory.stat", "anon 1024\nfile 2048\n");
        d.put("pids.current", "3\n");
        d.put("pids.max", "100\n");
        d.put(
            "io.stat",
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let s = stats(&d.0).unwrap();
        assert_eq!(s.cpu.usage.usage_total, 1500);
        assert_eq!(s.cpu.usage.usage_kernel, 500);
        assert_eq!(s.cpu.throttling.throttled_time, 20);
        assert_eq!(s.cpu.psi.some.avg10, 1.5);
        assert_eq!(s.memory.memory.usage, 4096);
        assert_eq!(s.memory.memory.limit, u64::MAX);
        assert_eq!(s.memory.memory.fail_count, 2);
        assert_eq!(s.memory.memory.max_usage, 0, "no memory.peak: zero");
        assert_eq!(s.memory.stats.get("file"), Some(&2048));
        assert_eq!((s.pids.current, s.pids.limit), (3, 100));
        assert_eq!(s.blkio.service_bytes.len(), 2);
        assert_eq!(s.blkio.serviced[1].op_type.as_deref(), Some("write"));
        assert_eq!(s.blkio.serviced[1].value, 2);
        assert!(s.hugetlb.is_empty());
    }

    #[test]
    fn only_listed_controllers_are_read_and_bad_files_are_named() {
        let d = Scratch::new("bare");
        d.put("cgroup.controllers", "\n");
        d.put("cpu.stat", "usage_usec 7\nuser_usec 5\nsystem_usec 2\n");
        let s = stats(&d.0).unwrap();
        assert_eq!(s.cpu.usage.usage_total, 7);
        assert_eq!(s.cpu.throttling.periods, 0);
        assert_eq!(s.memory.memory.usage, 0);

        d.put("cgroup.controllers", "memory\n");
        d.put("memory.current", "lots\n");
        d.put("memory.stat", "anon 1\n");
        let e = stats(&d.0).unwrap_err().to_string();
        assert!(e.contains("memory.current"), "{e}");

        let gone = d.0.join("gone");
        let e = stats(&gone).unwrap_err().to_string();
        assert!(e.contains("cgroup.controllers"), "{e}");
    }
}
