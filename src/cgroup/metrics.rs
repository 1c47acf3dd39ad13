//! Stats: libcgroups' numbers as containerd's cgroup `Metrics` messages (v1 for a cgroup v1
//! or hybrid host, v2 for a unified one), which `ctr task metrics` and CRI's
//! ContainerStats/PodSandboxStats decode. Units follow containerd's cgroups library: v1 CPU
//! times in nanoseconds, v2 in microseconds, memory in bytes.

use std::collections::HashMap;

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use libcgroups::stats::{BlkioDeviceStat, MemoryData, Stats};

use crate::error::{Error, Result};

/// containerd's metrics for the container, packed as the Stats response carries them
/// (type URL `io.containerd.cgroups.v1.Metrics` or `…v2.Metrics`).
pub fn to_any(stats: &Stats, unified: bool) -> Result<Any> {
    let (type_url, value) = if unified {
        (V2_URL, to_v2(stats).write_to_bytes())
    } else {
        (V1_URL, to_v1(stats, clock_ticks()).write_to_bytes())
    };
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = value.map_err(|e| Error::Internal(format!("encode metrics: {e}")))?;
    Ok(any)
}

// containerd registers these types with typeurl under their bare proto names (gogo
// registration): "type.googleapis.com/…" makes `ctr task metrics` answer "not found".
const V1_URL: &str = "io.containerd.cgroups.v1.Metrics";
const V2_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// USER_HZ: the unit of cpuacct.stat.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn stat(m: &HashMap<String, u64>, key: &str) -> u64 {
    m.get(key).copied().unwrap_or(0)
}

fn v1_entry(d: &MemoryData) -> MessageField<v1::MemoryEntry> {
    MessageField::some(v1::MemoryEntry {
        limit: d.limit,
        usage: d.usage,
        max: d.max_usage,
        failcnt: d.fail_count,
        ..Default::default()
    })
}

fn v1_blkio(entries: &[BlkioDeviceStat]) -> Vec<v1::BlkIOEntry> {
    entries
        .iter()
        .map(|e| v1::BlkIOEntry {
            op: e.op_type.clone().unwrap_or_default(),
            major: e.major,
            minor: e.minor,
            value: e.value,
            ..Default::default()
        })
        .collect()
}

pub fn to_v1(s: &Stats, ticks: u64) -> v1::Metrics {
    let ns = |t: u64| t.saturating_mul(1_000_000_000) / ticks.max(1);
    let cpu = &s.cpu;
    let m = &s.memory.stats;
    let memory = v1::MemoryStat {
        cache: s.memory.cache.max(stat(m, "cache")),
        rss: stat(m, "rss"),
        rss_huge: stat(m, "rss_huge"),
        mapped_file: stat(m, "mapped_file"),
        dirty: stat(m, "dirty"),
        writeback: stat(m, "writeback"),
        pg_pg_in: stat(m, "pgpgin"),
        pg_pg_out: stat(m, "pgpgout"),
        pg_fault: stat(m, "pgfault"),
        pg_maj_fault: stat(m, "pgmajfault"),
        inactive_anon: stat(m, "inactive_anon"),
        active_anon: stat(m, "active_anon"),
        inactive_file: stat(m, "inactive_file"),
        active_file: stat(m, "active_file"),
        unevictable: stat(m, "unevictable"),
        hierarchical_memory_limit: stat(m, "hierarchical_memory_limit"),
        hierarchical_swap_limit: stat(m, "hierarchical_memsw_limit"),
        total_cache: stat(m, "total_cache"),
        total_rss: stat(m, "total_rss"),
        total_rss_huge: stat(m, "total_rss_huge"),
        total_mapped_file: stat(m, "total_mapped_file"),
        total_dirty: stat(m, "total_dirty"),
        total_writeback: stat(m, "total_writeback"),
        total_pg_pg_in: stat(m, "total_pgpgin"),
        total_pg_pg_out: stat(m, "total_pgpgout"),
        total_pg_fault: stat(m, "total_pgfault"),
        total_pg_maj_fault: stat(m, "total_pgmajfault"),
        total_inactive_anon: stat(m, "total_inactive_anon"),
        total_active_anon: stat(m, "total_active_anon"),
        total_inactive_file: stat(m, "total_inactive_file"),
        total_active_file: stat(m, "total_active_file"),
        total_unevictable: stat(m, "total_unevictable"),
        usage: v1_entry(&s.memory.memory),
        swap: v1_entry(&s.memory.memswap),
        kernel: v1_entry(&s.memory.kernel),
        kernel_tcp: v1_entry(&s.memory.kernel_tcp),
        ..Default::default()
    };
    let b = &s.blkio;
    let mut hugetlb: Vec<v1::HugetlbStat> = s
        .hugetlb
        .iter()
        .map(|(size, h)| v1::HugetlbStat {
            usage: h.usage,
            max: h.max_usage,
            failcnt: h.fail_count,
            pagesize: size.clone(),
            ..Default::default()
        })
        .collect();
    hugetlb.sort_by(|a, b| a.pagesize.cmp(&b.pagesize));
    v1::Metrics {
        hugetlb,
        pids: MessageField::some(v1::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: cpu.usage.usage_total,
                kernel: ns(cpu.usage.usage_kernel),
                user: ns(cpu.usage.usage_user),
                per_cpu: cpu.usage.per_core_usage_total.clone(),
                ..Default::default()
            }),
            throttling: MessageField::some(v1::Throttle {
                periods: cpu.throttling.periods,
                throttled_periods: cpu.throttling.throttled_periods,
                throttled_time: cpu.throttling.throttled_time,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(memory),
        blkio: MessageField::some(v1::BlkIOStat {
            io_service_bytes_recursive: v1_blkio(&b.service_bytes),
            io_serviced_recursive: v1_blkio(&b.serviced),
            io_queued_recursive: v1_blkio(&b.queued),
            io_service_time_recursive: v1_blkio(&b.service_time),
            io_wait_time_recursive: v1_blkio(&b.wait_time),
            io_merged_recursive: v1_blkio(&b.merged),
            io_time_recursive: v1_blkio(&b.time),
            sectors_recursive: v1_blkio(&b.sectors),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn to_v2(s: &Stats) -> v2::Metrics {
    let m = &s.memory.stats;
    let cpu = &s.cpu;
    // libcgroups reports io.stat as read/write entries per device; containerd wants one
    // entry per device.
    let mut io: Vec<v2::IOEntry> = Vec::new();
    let mut add = |e: &BlkioDeviceStat, bytes: bool| {
        let i = match io
            .iter()
            .position(|x| x.major == e.major && x.minor == e.minor)
        {
            Some(i) => i,
            None => {
                io.push(v2::IOEntry {
                    major: e.major,
                    minor: e.minor,
                    ..Default::default()
                });
                io.len() - 1
            }
        };
        let read = e.op_type.as_deref() == Some("read");
        let entry = &mut io[i];
        match (bytes, read) {
            (true, true) => entry.rbytes = e.value,
            (true, false) => entry.wbytes = e.value,
            (false, true) => entry.rios = e.value,
            (false, false) => entry.wios = e.value,
        }
    };
    for e in &s.blkio.service_bytes {
        add(e, true);
    }
    for e in &s.blkio.serviced {
        add(e, false);
    }
    let mut hugetlb: Vec<v2::HugeTlbStat> = s
        .hugetlb
        .iter()
        .map(|(size, h)| v2::HugeTlbStat {
            current: h.usage,
            max: h.max_usage,
            failcnt: h.fail_count,
            pagesize: size.clone(),
            ..Default::default()
        })
        .collect();
    hugetlb.sort_by(|a, b| a.pagesize.cmp(&b.pagesize));
    v2::Metrics {
        pids: MessageField::some(v2::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(v2::CPUStat {
            usage_usec: cpu.usage.usage_total,
            user_usec: cpu.usage.usage_user,
            system_usec: cpu.usage.usage_kernel,
            nr_periods: cpu.throttling.periods,
            nr_throttled: cpu.throttling.throttled_periods,
            throttled_usec: cpu.throttling.throttled_time,
            ..Default::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            anon: stat(m, "anon"),
            file: stat(m, "file"),
            kernel_stack: stat(m, "kernel_stack"),
            slab: stat(m, "slab"),
            sock: stat(m, "sock"),
            shmem: stat(m, "shmem"),
            file_mapped: stat(m, "file_mapped"),
            file_dirty: stat(m, "file_dirty"),
            file_writeback: stat(m, "file_writeback"),
            anon_thp: stat(m, "anon_thp"),
            inactive_anon: stat(m, "inactive_anon"),
            active_anon: stat(m, "active_anon"),
            inactive_file: stat(m, "inactive_file"),
            active_file: stat(m, "active_file"),
            unevictable: stat(m, "unevictable"),
            slab_reclaimable: stat(m, "slab_reclaimable"),
            slab_unreclaimable: stat(m, "slab_unreclaimable"),
            pgfault: stat(m, "pgfault"),
            pgmajfault: stat(m, "pgmajfault"),
            workingset_refault: stat(m, "workingset_refault"),
            workingset_activate: stat(m, "workingset_activate"),
            workingset_nodereclaim: stat(m, "workingset_nodereclaim"),
            pgrefill: stat(m, "pgrefill"),
            pgscan: stat(m, "pgscan"),
            pgsteal: stat(m, "pgsteal"),
            pgactivate: stat(m, "pgactivate"),
            pgdeactivate: stat(m, "pgdeactivate"),
            pglazyfree: stat(m, "pglazyfree"),
            pglazyfreed: stat(m, "pglazyfreed"),
            thp_fault_alloc: stat(m, "thp_fault_alloc"),
            thp_collapse_alloc: stat(m, "thp_collapse_alloc"),
            usage: s.memory.memory.usage,
            usage_limit: s.memory.memory.limit,
            max_usage: s.memory.memory.max_usage,
            swap_usage: s.memory.memswap.usage,
            swap_limit: s.memory.memswap.limit,
            swap_max_usage: s.memory.memswap.max_usage,
            ..Default::default()
        }),
        io: MessageField::some(v2::IOStat {
            usage: io,
            ..Default::default()
        }),
        hugetlb,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcgroups::stats::HugeTlbStats;

    /// Every field a distinct value, so a value in the wrong place shows.
    fn sample(v2_keys: bool) -> Stats {
        let mut s = Stats::default();
        s.cpu.usage.usage_total = 1_000_001;
        s.cpu.usage.usage_user = 200;
        s.cpu.usage.usage_kernel = 300;
        s.cpu.usage.per_core_usage_total = vec![11, 12];
        s.cpu.throttling.periods = 4;
        s.cpu.throttling.throttled_periods = 5;
        s.cpu.throttling.throttled_time = 6;
        s.pids.current = 7;
        s.pids.limit = 8;
        s.memory.memory = MemoryData {
            usage: 100,
            max_usage: 101,
            fail_count: 102,
            limit: 103,
        };
        s.memory.memswap = MemoryData {
            usage: 110,
            max_usage: 111,
            fail_count: 112,
            limit: 113,
        };
        s.memory.kernel.usage = 120;
        s.memory.kernel_tcp.usage = 130;
        let keys: &[(&str, u64)] = if v2_keys {
            &[
                ("anon", 21),
                ("file", 22),
                ("shmem", 23),
                ("pgmajfault", 24),
            ]
        } else {
            &[
                ("cache", 31),
                ("rss", 32),
                ("total_rss", 33),
                ("pgpgin", 34),
            ]
        };
        s.memory.stats = keys.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        s.memory.cache = 31;
        for (op, bytes, ios) in [("read", 1000, 10), ("write", 2000, 20)] {
            s.blkio.service_bytes.push(BlkioDeviceStat {
                major: 8,
                minor: 0,
                op_type: Some(op.into()),
                value: bytes,
            });
            s.blkio.serviced.push(BlkioDeviceStat {
                major: 8,
                minor: 0,
                op_type: Some(op.into()),
                value: ios,
            });
        }
        s.hugetlb.insert(
            "2MB".into(),
            HugeTlbStats {
                usage: 41,
                max_usage: 42,
                fail_count: 43,
            },
        );
        s
    }

    #[test]
    fn v1_metrics_carry_every_number_in_containerds_units() {
        let any = to_any(&sample(false), false).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        let t = clock_ticks();
        let cpu = m.cpu.usage.as_ref().unwrap();
        assert_eq!(cpu.total, 1_000_001, "cpuacct.usage is already ns");
        assert_eq!(cpu.user, 200 * 1_000_000_000 / t, "ticks → ns");
        assert_eq!(cpu.kernel, 300 * 1_000_000_000 / t);
        assert_eq!(cpu.per_cpu, [11, 12]);
        let th = m.cpu.throttling.as_ref().unwrap();
        assert_eq!(
            (th.periods, th.throttled_periods, th.throttled_time),
            (4, 5, 6)
        );
        assert_eq!((m.pids.current, m.pids.limit), (7, 8));
        let u = m.memory.usage.as_ref().unwrap();
        assert_eq!((u.usage, u.max, u.failcnt, u.limit), (100, 101, 102, 103));
        let sw = m.memory.swap.as_ref().unwrap();
        assert_eq!(
            (sw.usage, sw.max, sw.failcnt, sw.limit),
            (110, 111, 112, 113)
        );
        assert_eq!(m.memory.kernel.usage, 120);
        assert_eq!(m.memory.kernel_tcp.usage, 130);
        assert_eq!(
            (
                m.memory.cache,
                m.memory.rss,
                m.memory.total_rss,
                m.memory.pg_pg_in
            ),
            (31, 32, 33, 34)
        );
        let bytes = &m.blkio.io_service_bytes_recursive;
        assert_eq!(bytes.len(), 2);
        assert_eq!(
            (bytes[1].op.as_str(), bytes[1].major, bytes[1].value),
            ("write", 8, 2000)
        );
        assert_eq!(m.blkio.io_serviced_recursive[0].value, 10);
        assert_eq!(
            (
                m.hugetlb[0].pagesize.as_str(),
                m.hugetlb[0].usage,
                m.hugetlb[0].max
            ),
            ("2MB", 41, 42)
        );
    }

    #[test]
    fn v2_metrics_carry_every_number_in_containerds_units() {
        let any = to_any(&sample(true), true).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (1_000_001, 200, 300),
            "cpu.stat is already µs"
        );
        assert_eq!(
            (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec),
            (4, 5, 6)
        );
        assert_eq!((m.pids.current, m.pids.limit), (7, 8));
        assert_eq!(
            (m.memory.usage, m.memory.usage_limit, m.memory.max_usage),
            (100, 103, 101)
        );
        assert_eq!((m.memory.swap_usage, m.memory.swap_limit), (110, 113));
        assert_eq!(
            (
                m.memory.anon,
                m.memory.file,
                m.memory.shmem,
                m.memory.pgmajfault
            ),
            (21, 22, 23, 24)
        );
        assert_eq!(m.io.usage.len(), 1, "one entry per device");
        let io = &m.io.usage[0];
        assert_eq!(
            (io.major, io.minor, io.rbytes, io.wbytes, io.rios, io.wios),
            (8, 0, 1000, 2000, 10, 20)
        );
        assert_eq!(
            (
                m.hugetlb[0].pagesize.as_str(),
                m.hugetlb[0].current,
                m.hugetlb[0].failcnt
            ),
            ("2MB", 41, 43)
        );
    }
}
