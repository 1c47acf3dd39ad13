//! Side-by-side benchmark: io.containerd.youki.v2 (ours) against io.containerd.runc.v2,
//! both through the same private containerd, alternating A B A B:
//!
//! 1. `ctr run --rm <busybox> /bin/true` latency;
//! 2. CRI pod start (RunPodSandbox + CreateContainer + StartContainer, which returns once
//!    the container runs) and pod teardown (Stop/Remove container, Stop/Remove sandbox);
//! 3. 50 pods started with concurrency 10: wall time;
//! 4. memory of every shim process (RSS and PSS from smaps_rollup) with 1 and with 50 pods,
//!    per pod, and threads per shim process.
//!
//! Run through `hack/bench.sh` (which builds, starts the private containerd and calls
//! this). Environment: BENCH_N (runs per runtime, default 20), BENCH_PODS (default 50),
//! BENCH_CONCURRENCY (default 10), CONTAINERD_ADDRESS, BENCH_OUT (markdown report path).
//! Prints a table and one `BENCH <metric> youki=… runc=… ratio=…` line per metric.
//!
//! Two builds of our shim instead (`hack/bench.sh --compare B_DIR`): SHIM_A and SHIM_B name
//! two containerd-shim-youki-v2 files; A runs as handler `youki` (containerd finds it on its
//! PATH), B as handler `youki-b` (hack/containerd.sh registers it with `runtime_path`) and,
//! for ctr, by its absolute path as the runtime. Shim processes are told apart by
//! /proc/PID/exe. The columns are then A and B (`BENCH … A=… B=…`).

#[path = "../tests/common/kubelet.rs"]
mod kubelet;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubelet::{Cri, PodSpec, cri_socket};

#[derive(Clone, Copy)]
struct Runtime {
    handler: &'static str,
    runtime_type: &'static str,
    shim: &'static str,
    /// Compare mode: the shim file, to tell two builds' processes apart.
    exe: Option<&'static str>,
    label: &'static str,
}

const YOUKI: Runtime = Runtime {
    handler: "youki",
    runtime_type: "io.containerd.youki.v2",
    shim: "containerd-shim-youki-v2",
    exe: None,
    label: "youki",
};
const RUNC: Runtime = Runtime {
    handler: "runc",
    runtime_type: "io.containerd.runc.v2",
    shim: "containerd-shim-runc-v2",
    exe: None,
    label: "runc",
};

/// Our shim under containerd 2.x's shim sandboxer (no pause image; the shim starts pause).
const SANDBOXED: Runtime = Runtime {
    handler: "youki-sandboxed",
    label: "youki sandboxer=shim",
    ..YOUKI
};

/// The two runtimes to compare: ours against runc, our two sandboxers against each other
/// (BENCH_VS=sandboxer, containerd 2.x), or (SHIM_A and SHIM_B set) two builds of ours.
fn runtimes() -> Result<[Runtime; 2], String> {
    if std::env::var("BENCH_VS").is_ok_and(|v| v == "sandboxer") {
        return Ok([
            SANDBOXED,
            Runtime {
                label: "youki sandboxer=podsandbox",
                ..YOUKI
            },
        ]);
    }
    let (Ok(a), Ok(b)) = (std::env::var("SHIM_A"), std::env::var("SHIM_B")) else {
        return Ok([YOUKI, RUNC]);
    };
    let canon = |p: String| -> Result<&'static str, String> {
        let c = std::fs::canonicalize(&p).map_err(|e| format!("{p}: {e}"))?;
        Ok(Box::leak(c.to_string_lossy().into_owned().into_boxed_str()))
    };
    let (a, b) = (canon(a)?, canon(b)?);
    Ok([
        Runtime {
            exe: Some(a),
            label: "A",
            ..YOUKI
        },
        Runtime {
            handler: "youki-b",
            runtime_type: b,
            exe: Some(b),
            label: "B",
            ..YOUKI
        },
    ])
}
const IMAGE: &str = "localhost/youki/busybox:latest";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, 10th and 90th percentile.
fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "bench-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn ctr_run(rt: Runtime) -> Result<Duration, String> {
    let id = unique("ctr");
    let t = Instant::now();
    let out = Command::new("ctr")
        .args([
            "--address",
            &cri_socket().to_string_lossy(),
            "-n",
            "default",
        ])
        .args([
            "run",
            "--rm",
            "--runtime",
            rt.runtime_type,
            IMAGE,
            &id,
            "/bin/true",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "ctr run {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(d)
}

fn pod_spec(rt: Runtime) -> PodSpec {
    let mut spec = PodSpec::new(&unique(rt.handler));
    spec.handler = rt.handler.to_string();
    spec.cgroup_parent = format!("/youki-bench/pod-{}", spec.uid);
    spec
}

/// Starts a pod with one `sleep` container; returns its ID once the container runs.
fn start_pod(cri: &mut Cri, spec: &PodSpec) -> Result<String, String> {
    let pod = cri.run_pod(spec)?;
    // Ends on SIGTERM, so teardown measures the runtimes rather than a grace period; says
    // "ready" once the trap is set (see `wait_ready`).
    cri.run_container(
        &pod,
        spec,
        "app",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo ready; sleep 3600 & wait",
        ],
    )?;
    Ok(pod)
}

/// Waits (untimed) until the container has set its SIGTERM trap. StartContainer returns
/// once the process runs, not once `sh` has read its script: the shell is PID 1 of its
/// PID namespace, so a SIGTERM that arrives before the trap is ignored by the kernel and
/// StopContainer waits out its 2 s grace period and kills. Stopping right after the start
/// hit that race in a few per cent of the pods (of either runtime, more often on a busy
/// machine) and put 2 s teardowns into the samples.
fn wait_ready(spec: &PodSpec) -> Result<(), String> {
    let log = spec.log_directory.join("app/0.log");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if std::fs::read_to_string(&log).is_ok_and(|s| s.contains("ready")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("{}: no \"ready\" after 10 s", log.display()))
}

fn teardown(cri: &mut Cri, pod: &str, spec: &PodSpec) -> Result<(), String> {
    let r = cri.teardown(pod);
    spec.remove_leftover_dirs();
    r
}

#[derive(Default, Clone, Copy)]
struct Memory {
    processes: usize,
    rss_kib: u64,
    pss_kib: u64,
    max_threads: u64,
}

/// Every process of this shim binary serving the k8s.io namespace of *our* containerd
/// (`-address <socket>`): other containerds on the machine may run the same shims.
fn shim_memory(rt: Runtime) -> Memory {
    let mut m = Memory::default();
    let address = format!("\0-address\0{}\0", cri_socket().to_string_lossy());
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        let argv0 = cmd.split('\0').next().unwrap_or("");
        if !argv0.ends_with(rt.shim) || !cmd.contains("\0k8s.io\0") || !cmd.contains(&address) {
            continue;
        }
        if let Some(exe) = rt.exe {
            let own = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if own.as_os_str() != exe {
                continue;
            }
        }
        let field = |text: &str, key: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        m.processes += 1;
        m.rss_kib += field(&rollup, "Rss:");
        m.pss_kib += field(&rollup, "Pss:");
        m.max_threads = m.max_threads.max(field(&status, "Threads:"));
    }
    m
}

/// Starts `count` pods with `concurrency` clients; returns the wall time and the pods.
fn start_many(
    rt: Runtime,
    count: usize,
    concurrency: usize,
) -> Result<(Duration, Vec<(String, PodSpec)>), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let t = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, started, errors) = (next.clone(), started.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut cri = Cri::connect(&cri_socket());
                while next.fetch_add(1, Ordering::SeqCst) < count {
                    let spec = pod_spec(rt);
                    match start_pod(&mut cri, &spec) {
                        Ok(pod) => started
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((pod, spec)),
                        Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(e),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let wall = t.elapsed();
    let pods = std::mem::take(&mut *started.lock().unwrap_or_else(|p| p.into_inner()));
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !errors.is_empty() {
        teardown_many(pods, concurrency);
        return Err(format!("{} pods failed: {}", errors.len(), errors[0]));
    }
    Ok((wall, pods))
}

fn teardown_many(pods: Vec<(String, PodSpec)>, concurrency: usize) {
    let queue = Arc::new(Mutex::new(pods));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut cri = Cri::connect(&cri_socket());
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((pod, spec)) = next else { return };
                    if let Err(e) = teardown(&mut cri, &pod, &spec) {
                        eprintln!("teardown {pod}: {e}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

struct Report {
    table: String,
    lines: Vec<String>,
    /// Column names: youki and runc, or A and B.
    names: [&'static str; 2],
}

impl Report {
    fn row(&mut self, metric: &str, unit: &str, youki: &[f64], runc: &[f64]) {
        let (ym, y10, y90) = summary(youki);
        let (rm, r10, r90) = summary(runc);
        let ratio = if rm > 0.0 { ym / rm } else { f64::NAN };
        // The ratio depends on how much of both runs is containerd's own work; the
        // difference (what our shim saves) does not, so it compares across versions.
        let saved = rm - ym;
        let _ = writeln!(
            self.table,
            "| {metric} | {ym:.1} {unit} ({y10:.1}–{y90:.1}) | {rm:.1} {unit} ({r10:.1}–{r90:.1}) | **{ratio:.2}×** | {saved:.1} {unit} |"
        );
        self.lines.push(format!(
            "BENCH {metric} {a}={ym:.1} {b}={rm:.1} ratio={ratio:.3} saved={saved:.1}",
            a = self.names[0],
            b = self.names[1],
        ));
    }
}

fn main() -> Result<(), String> {
    let n = env_usize("BENCH_N", 20);
    let pods = env_usize("BENCH_PODS", 50);
    let conc = env_usize("BENCH_CONCURRENCY", 10);
    let both = runtimes()?;
    let [a, b] = [both[0].label, both[1].label];
    let mut report = Report {
        table: format!(
            "| metric | {a}: median (p10–p90) | {b}: median (p10–p90) | {a}/{b} | {b} − {a} |\n| --- | --- | --- | --- | --- |\n",
        ),
        lines: Vec::new(),
        names: [a, b],
    };

    eprintln!("ctr run latency: {n} runs per runtime, alternating (2 warm-up each) …");
    let mut lat = [Vec::new(), Vec::new()];
    for i in 0..n + 2 {
        for (k, rt) in both.iter().enumerate() {
            let d = ctr_run(*rt)?;
            if i >= 2 {
                lat[k].push(ms(d));
            }
        }
    }
    report.row("ctr run --rm /bin/true", "ms", &lat[0], &lat[1]);

    eprintln!("CRI pod start and teardown: {n} pods per runtime, alternating …");
    let mut cri = Cri::connect(&cri_socket());
    let (mut start, mut stop) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for i in 0..n + 1 {
        for (k, rt) in both.iter().enumerate() {
            let spec = pod_spec(*rt);
            let t = Instant::now();
            let pod = start_pod(&mut cri, &spec)?;
            let started = t.elapsed();
            wait_ready(&spec)?;
            let t = Instant::now();
            teardown(&mut cri, &pod, &spec)?;
            if i >= 1 {
                start[k].push(ms(started));
                stop[k].push(ms(t.elapsed()));
            }
        }
    }
    report.row(
        "CRI pod start (sandbox + 1 container running)",
        "ms",
        &start[0],
        &start[1],
    );
    report.row("CRI pod teardown", "ms", &stop[0], &stop[1]);

    eprintln!("memory with 1 pod …");
    let mut one = [Memory::default(); 2];
    for (k, rt) in both.iter().enumerate() {
        let spec = pod_spec(*rt);
        let pod = start_pod(&mut cri, &spec)?;
        std::thread::sleep(Duration::from_secs(1));
        one[k] = shim_memory(*rt);
        teardown(&mut cri, &pod, &spec)?;
    }

    eprintln!("{pods} pods with concurrency {conc}, per runtime …");
    let mut wall = [0.0; 2];
    let mut many = [Memory::default(); 2];
    for (k, rt) in both.iter().enumerate() {
        let (d, started) = start_many(*rt, pods, conc)?;
        wall[k] = ms(d);
        std::thread::sleep(Duration::from_secs(2));
        many[k] = shim_memory(*rt);
        teardown_many(started, conc);
    }
    report.row(
        &format!("{pods} pods, concurrency {conc}: wall"),
        "ms",
        &[wall[0]],
        &[wall[1]],
    );

    let kib = |v: u64| v as f64;
    report.row(
        "1 pod: shim RSS (all processes)",
        "KiB",
        &[kib(one[0].rss_kib)],
        &[kib(one[1].rss_kib)],
    );
    report.row(
        "1 pod: shim PSS (all processes)",
        "KiB",
        &[kib(one[0].pss_kib)],
        &[kib(one[1].pss_kib)],
    );
    let per = |v: u64| v as f64 / pods as f64;
    report.row(
        &format!("{pods} pods: shim PSS per pod"),
        "KiB",
        &[per(many[0].pss_kib)],
        &[per(many[1].pss_kib)],
    );
    report.row(
        &format!("{pods} pods: shim RSS per pod"),
        "KiB",
        &[per(many[0].rss_kib)],
        &[per(many[1].rss_kib)],
    );
    report.row(
        "threads per shim process (max)",
        "",
        &[one[0].max_threads as f64],
        &[one[1].max_threads as f64],
    );
    report.row(
        &format!("{pods} pods: shim processes"),
        "",
        &[many[0].processes as f64],
        &[many[1].processes as f64],
    );

    println!("{}", report.table);
    for l in &report.lines {
        println!("{l}");
    }
    if let Ok(path) = std::env::var("BENCH_OUT") {
        std::fs::write(&path, &report.table).map_err(|e| format!("write {path}: {e}"))?;
    }
    Ok(())
}
