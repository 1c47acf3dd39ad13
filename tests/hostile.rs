//! A corpus of hostile requests, sent straight to a live shim's ttrpc socket (as anything
//! that can reach the socket could): oversized and non-UTF-8 fields, NUL bytes, IDs at and
//! past the limits, unknown option types, bad JSON, bad signals, stdio paths that are not
//! what they claim, every RPC on an unknown ID, an ID reused after delete. Each must get a
//! clear error with the right code naming the value, the shim must keep serving, and
//! nothing may be left behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::CheckpointOptions;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::types::task::Status;
use ttrpc::{Code, context};

const TASK: &str = "containerd.task.v2.Task";

fn ctx() -> context::Context {
    context::with_timeout(Duration::from_secs(10).as_nanos() as i64)
}

/// The outcome of one request: Ok, or the status code and message.
type Outcome = Result<(), (Code, String)>;

fn outcome<T>(r: ttrpc::Result<T>) -> Outcome {
    match r {
        Ok(_) => Ok(()),
        Err(ttrpc::Error::RpcStatus(s)) => Err((s.code(), s.message)),
        Err(other) => Err((Code::UNKNOWN, format!("transport: {other:?}"))),
    }
}

/// How a value appears in the shim's messages: Rust's debug quoting, cut short for long
/// values (the shim quotes at most the first 128 bytes).
fn quoted(value: &str) -> String {
    let head: String = value.chars().take(24).collect();
    let q = format!("{head:?}");
    q[..q.len() - 1].to_string()
}

struct Corpus {
    client: TaskClient,
    raw: ttrpc::Client,
    /// The container that must keep running through it all.
    live: String,
    /// What was tried and what the shim answered, for the closing note.
    log: Vec<String>,
    /// Wrong answers seen with HOSTILE_KEEP_GOING.
    wrong: usize,
}

fn short(m: &str) -> String {
    m.chars().take(200).collect()
}

impl Corpus {
    /// Sends one hostile request; checks the code, that the message names `names`, that it
    /// answered in time, and that the shim still serves its container.
    fn expect(
        &mut self,
        what: &str,
        want: Code,
        names: &str,
        r: impl FnOnce(&TaskClient) -> Outcome,
    ) {
        let began = Instant::now();
        let got = r(&self.client);
        let took = began.elapsed();
        let wrong = match &got {
            Err((code, msg)) if *code != want => {
                Some(format!("{what}: {code:?}, wanted {want:?}: {}", short(msg)))
            }
            Err((_, msg)) if !msg.contains(names) => Some(format!(
                "{what}: message does not name {names:?}: {}",
                short(msg)
            )),
            Err((_, msg)) if msg.len() >= 4096 => {
                Some(format!("{what}: {} byte message", msg.len()))
            }
            Err(_) if took >= Duration::from_secs(8) => Some(format!("{what}: took {took:?}")),
            Ok(()) => Some(format!("{what}: accepted, wanted {want:?}")),
            Err(_) => None,
        };
        if let Some(w) = wrong {
            // HOSTILE_KEEP_GOING=1 lists every wrong answer (to compare builds) instead of
            // stopping at the first.
            if std::env::var_os("HOSTILE_KEEP_GOING").is_none() {
                panic!("{w}");
            }
            println!("WRONG: {w}");
            self.wrong += 1;
        }
        self.log.push(format!(
            "{what} -> {:?} ({:?})",
            want,
            got.err().map(|e| e.1.chars().take(140).collect::<String>())
        ));
        self.still_serving(what);
    }

    fn still_serving(&self, after: &str) {
        let r = self
            .client
            .connect(ctx(), &ConnectRequest::new())
            .unwrap_or_else(|e| panic!("after {after}: Connect failed: {e:?}"));
        assert!(r.shim_pid > 0);
        let mut s = StateRequest::new();
        s.id = self.live.clone();
        let st = self
            .client
            .state(ctx(), &s)
            .unwrap_or_else(|e| panic!("after {after}: State failed: {e:?}"));
        assert_eq!(st.status.enum_value(), Ok(Status::RUNNING), "after {after}");
    }

    /// A request as raw protobuf bytes (for what the generated types cannot hold).
    fn raw(&self, method: &str, payload: Vec<u8>) -> Outcome {
        let req = ttrpc::Request {
            service: TASK.into(),
            method: method.into(),
            timeout_nano: Duration::from_secs(10).as_nanos() as i64,
            payload,
            ..Default::default()
        };
        match self.raw.request(req) {
            Ok(resp) => match resp.status.into_option() {
                Some(s) if s.code() != Code::OK => Err((s.code(), s.message)),
                _ => Ok(()),
            },
            Err(ttrpc::Error::RpcStatus(s)) => Err((s.code(), s.message)),
            Err(e) => Err((Code::UNKNOWN, format!("transport: {e:?}"))),
        }
    }
}

/// Removes the test's scratch directory (fifos, bundles, files) however the test ends.
struct RmDir(PathBuf);

impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn create_req(id: &str, bundle: &str) -> CreateTaskRequest {
    let mut r = CreateTaskRequest::new();
    r.id = id.into();
    r.bundle = bundle.into();
    r
}

fn any(type_url: &str, value: Vec<u8>) -> Any {
    let mut a = Any::new();
    a.type_url = type_url.into();
    a.value = value;
    a
}

/// runtimeoptions.v1.Options with one string field (2 = config_path, 3 = config_body).
fn cri_options(field: u8, text: &str) -> Any {
    let mut v = vec![(field << 3) | 2];
    let mut n = text.len();
    while n >= 0x80 {
        v.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
    v.extend_from_slice(text.as_bytes());
    any("type.googleapis.com/runtimeoptions.v1.Options", v)
}

fn process_any(json: &[u8]) -> Any {
    any(
        "types.containerd.io/opencontainers/runtime-spec/1/Process",
        json.to_vec(),
    )
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// Every RPC that names a container, sent with `id` (and `exec_id`).
fn every_rpc(c: &mut Corpus, label: &str, id: &str, exec_id: &str, want: Code, names: &str) {
    let (i, e) = (id.to_string(), exec_id.to_string());
    let w = want;
    c.expect(&format!("State {label}"), w, names, |t| {
        let mut r = StateRequest::new();
        (r.id, r.exec_id) = (i.clone(), e.clone());
        outcome(t.state(ctx(), &r))
    });
    c.expect(&format!("Start {label}"), w, names, |t| {
        let mut r = StartRequest::new();
        (r.id, r.exec_id) = (i.clone(), e.clone());
        outcome(t.start(ctx(), &r))
    });
    c.expect(&format!("Delete {label}"), w, names, |t| {
        let mut r = DeleteRequest::new();
        (r.id, r.exec_id) = (i.clone(), e.clone());
        outcome(t.delete(ctx(), &r))
    });
    c.expect(&format!("Kill {label}"), w, names, |t| {
        let mut r = KillRequest::new();
        (r.id, r.exec_id) = (i.clone(), e.clone());
        r.signal = 9;
        outcome(t.kill(ctx(), &r))
    });
    c.expect(&format!("Wait {label}"), w, names, |t| {
        let mut r = WaitRequest::new();
        (r.id, r.exec_id) = (i.clone(), e.clone());
        outcome(t.wait(ctx(), &r))
    });
    c.expect(&format!("CloseIO {label}"), w, names, |t| {
        let mut r = CloseIORequest::new();
        (r.id, r.exec_id) = (i.clone(), e.clone());
        r.stdin = true;
        outcome(t.close_io(ctx(), &r))
    });
    c.expect(&format!("ResizePty {label}"), w, names, |t| {
        let mut r = ResizePtyRequest::new();
        (r.id, r.exec_id) = (i.clone(), e.clone());
        (r.width, r.height) = (80, 24);
        outcome(t.resize_pty(ctx(), &r))
    });
    if !exec_id.is_empty() {
        return;
    }
    c.expect(&format!("Pids {label}"), w, names, |t| {
        let mut r = PidsRequest::new();
        r.id = i.clone();
        outcome(t.pids(ctx(), &r))
    });
    c.expect(&format!("Pause {label}"), w, names, |t| {
        let mut r = PauseRequest::new();
        r.id = i.clone();
        outcome(t.pause(ctx(), &r))
    });
    c.expect(&format!("Resume {label}"), w, names, |t| {
        let mut r = ResumeRequest::new();
        r.id = i.clone();
        outcome(t.resume(ctx(), &r))
    });
    c.expect(&format!("Stats {label}"), w, names, |t| {
        let mut r = StatsRequest::new();
        r.id = i.clone();
        outcome(t.stats(ctx(), &r))
    });
    c.expect(&format!("Update {label}"), w, names, |t| {
        let mut r = UpdateTaskRequest::new();
        r.id = i.clone();
        r.resources = Some(any("", b"{}".to_vec())).into();
        outcome(t.update(ctx(), &r))
    });
    c.expect(&format!("Checkpoint {label}"), w, names, |t| {
        let mut r = CheckpointTaskRequest::new();
        r.id = i.clone();
        r.path = "/tmp/cp".into();
        outcome(t.checkpoint(ctx(), &r))
    });
    c.expect(&format!("Exec {label}"), w, names, |t| {
        let mut r = ExecProcessRequest::new();
        r.id = i.clone();
        r.exec_id = "e1".into();
        r.spec = Some(process_any(
            br#"{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
        ))
        .into();
        outcome(t.exec(ctx(), &r))
    });
    c.expect(&format!("Connect {label}"), w, names, |t| {
        let mut r = ConnectRequest::new();
        r.id = i.clone();
        outcome(t.connect(ctx(), &r))
    });
}

#[test]
fn a_hundred_hostile_requests_leave_nothing() {
    let id = unique("hostile");
    run_detached(&id, &["sleep", "1000"]);
    let guard = RemoveOnDrop(id.clone());
    let addr = format!("unix://{}", socket_path(&id).display());
    let dir = std::env::temp_dir().join(format!("youki-hostile-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let _scratch = RmDir(dir.clone());
    let mut c = Corpus {
        client: TaskClient::new(ttrpc::Client::connect(&addr).expect("connect shim")),
        raw: ttrpc::Client::connect(&addr).expect("connect shim"),
        live: id.clone(),
        log: Vec::new(),
        wrong: 0,
    };
    let shim_pid = c
        .client
        .connect(ctx(), &ConnectRequest::new())
        .expect("connect")
        .shim_pid;

    // IDs that can never name a container, on every RPC.
    let bad_ids = [
        String::new(),
        ".".into(),
        "..".into(),
        "../escape".into(),
        "a/b".into(),
        "-dash".into(),
        "a b".into(),
        "nul\0byte".into(),
        "new\nline".into(),
        "ünïcödé".into(),
        "x".repeat(1025),
        "y".repeat(1 << 20),
    ];
    for bad in &bad_ids {
        let label = format!("id {:?}", quoted(bad));
        let names = if bad.is_empty() {
            "\"\"".to_string()
        } else {
            quoted(bad)
        };
        if bad.is_empty() {
            // An empty Connect asks after the shim itself: fine. Every other RPC refuses.
            let mut s = StateRequest::new();
            s.id = String::new();
            c.expect("State of id \"\"", Code::INVALID_ARGUMENT, &names, |t| {
                outcome(t.state(ctx(), &s))
            });
            continue;
        }
        every_rpc(&mut c, &label, bad, "", Code::INVALID_ARGUMENT, &names);
        let b = bad.clone();
        c.expect(
            &format!("Create {label}"),
            Code::INVALID_ARGUMENT,
            &names,
            |t| outcome(t.create(ctx(), &create_req(&b, "/nonexistent/bundle"))),
        );
    }
    // The longest valid ID is accepted as an ID (and is simply not there).
    let longest = "z".repeat(1024);
    every_rpc(
        &mut c,
        "1024-byte id",
        &longest,
        "",
        Code::NOT_FOUND,
        &quoted(&longest),
    );
    // A valid, unknown ID on every RPC; an unknown or invalid exec of the live container.
    every_rpc(
        &mut c,
        "unknown id",
        "no-such-container",
        "",
        Code::NOT_FOUND,
        "no-such-container",
    );
    every_rpc(
        &mut c,
        "unknown exec",
        &id,
        "no-such-exec",
        Code::NOT_FOUND,
        "no-such-exec",
    );
    every_rpc(
        &mut c,
        "bad exec id",
        &id,
        "../x",
        Code::INVALID_ARGUMENT,
        "../x",
    );

    // Non-UTF-8 bytes where protobuf wants a string: the request does not decode.
    let mut enc = create_req("AAAAAAAA", "/BBBBBBBB")
        .write_to_bytes()
        .unwrap();
    for b in enc.iter_mut().filter(|b| **b == b'A') {
        *b = 0xff;
    }
    let r = c.raw("Create", enc);
    c.log
        .push(format!("Create with a non-UTF-8 id (raw bytes) -> {r:?}"));
    // Refused by ttrpc-rust's request decoding, before any shim code runs; it chooses
    // UNKNOWN ("Unpack request error Invalid UTF-8 sequence").
    assert!(matches!(&r, Err((_, m)) if m.contains("UTF-8")), "{r:?}");
    c.still_serving("non-UTF-8 id");
    let mut enc = {
        let mut k = KillRequest::new();
        k.id = id.clone();
        k.exec_id = "EEEE".into();
        k.signal = 9;
        k.write_to_bytes().unwrap()
    };
    for b in enc.iter_mut().filter(|b| **b == b'E') {
        *b = 0xc3;
    }
    let r = c.raw("Kill", enc);
    c.log.push(format!(
        "Kill with a non-UTF-8 exec id (raw bytes) -> {r:?}"
    ));
    assert!(matches!(&r, Err((_, m)) if m.contains("UTF-8")), "{r:?}");
    c.still_serving("non-UTF-8 exec id");
    let r = c.raw("Create", vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    c.log.push(format!(
        "Create whose protobuf lies about a length -> {r:?}"
    ));
    assert!(r.is_err(), "{r:?}");
    c.still_serving("truncated protobuf");
    let r = c.raw("NoSuchMethod", Vec::new());
    c.log.push(format!("an unknown method -> {r:?}"));
    assert!(
        matches!(&r, Err((Code::UNIMPLEMENTED | Code::NOT_FOUND, _))),
        "{r:?}"
    );
    c.still_serving("unknown method");

    // Create: paths and options.
    let fresh = unique("hostile-new");
    for (what, bundle, names) in [
        (
            "relative bundle",
            "rel/bundle".to_string(),
            "rel/bundle".to_string(),
        ),
        ("empty bundle", String::new(), "bundle \"\"".into()),
        ("bundle with NUL", "/tmp/a\0b".into(), "bundle".into()),
        (
            "bundle of 8 KiB",
            format!("/{}", "b".repeat(8192)),
            "bundle".into(),
        ),
    ] {
        let f = fresh.clone();
        c.expect(
            &format!("Create with {what}"),
            Code::INVALID_ARGUMENT,
            &names,
            |t| outcome(t.create(ctx(), &create_req(&f, &bundle))),
        );
    }
    let f = fresh.clone();
    c.expect(
        "Create with a relative checkpoint",
        Code::INVALID_ARGUMENT,
        "cp/rel",
        |t| {
            let mut r = create_req(&f, "/nonexistent/bundle");
            r.checkpoint = "cp/rel".into();
            outcome(t.create(ctx(), &r))
        },
    );
    let f = fresh.clone();
    c.expect(
        "Create with a NUL in a rootfs mount",
        Code::INVALID_ARGUMENT,
        "rootfs mount source",
        |t| {
            let mut r = create_req(&f, "/nonexistent/bundle");
            let mut m = containerd_shim_protos::types::mount::Mount::new();
            m.type_ = "bind".into();
            m.source = "/tmp\0/etc".into();
            r.rootfs.push(m);
            outcome(t.create(ctx(), &r))
        },
    );

    // Exec into the live container: process specs that are not processes.
    let secret_env =
        br#"{"args":["true"],"cwd":"/","env":"TOKEN=s3cr3t-value","user":{"uid":0,"gid":0}}"#;
    let big = format!("{{\"args\":[\"{}\"]}}", "a".repeat(2 << 20));
    let specs: Vec<(&str, Option<&[u8]>)> = vec![
        ("no process spec", None),
        ("a process spec that is not JSON", Some(b"not json")),
        ("a process spec that is a list", Some(b"[]")),
        (
            "a process spec whose args are a number",
            Some(br#"{"args":5,"cwd":"/"}"#),
        ),
        (
            "a process spec that is not UTF-8",
            Some(b"{\"args\":[\"\xff\"],\"cwd\":\"/\"}"),
        ),
        ("a process spec whose env is a string", Some(secret_env)),
        ("a 2 MiB process spec", Some(big.as_bytes())),
    ];
    for (what, spec) in specs {
        let i = id.clone();
        c.expect(
            &format!("Exec with {what}"),
            Code::INVALID_ARGUMENT,
            "\"bad-exec\"",
            |t| {
                let mut r = ExecProcessRequest::new();
                r.id = i.clone();
                r.exec_id = "bad-exec".into();
                if let Some(s) = spec {
                    r.spec = Some(process_any(s)).into();
                }
                let o = outcome(t.exec(ctx(), &r));
                if let Err((_, m)) = &o {
                    assert!(!m.contains("s3cr3t"), "{what}: {m}");
                }
                o
            },
        );
    }
    // An exec whose stdout is a directory: accepted as a request, refused at Start, gone
    // after Delete.
    let mut ex = ExecProcessRequest::new();
    ex.id = id.clone();
    ex.exec_id = "dir-out".into();
    ex.stdout = dir.display().to_string();
    ex.spec = Some(process_any(
        br#"{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
    ))
    .into();
    c.client
        .exec(ctx(), &ex)
        .expect("exec with a directory for stdout");
    let i = id.clone();
    c.expect(
        "Start of an exec whose stdout is a directory",
        Code::INVALID_ARGUMENT,
        "is a directory",
        |t| {
            let mut r = StartRequest::new();
            (r.id, r.exec_id) = (i.clone(), "dir-out".into());
            outcome(t.start(ctx(), &r))
        },
    );
    let mut del = DeleteRequest::new();
    (del.id, del.exec_id) = (id.clone(), "dir-out".into());
    c.client
        .delete(ctx(), &del)
        .expect("delete the unstarted exec");

    // Kill: signals the kernel does not have.
    for (what, sig) in [
        ("signal 0", 0u32),
        ("signal 65", 65),
        ("signal -1", u32::MAX),
        ("signal -9", (-9i32) as u32),
    ] {
        let i = id.clone();
        c.expect(
            &format!("Kill with {what}"),
            Code::INVALID_ARGUMENT,
            &sig.to_string(),
            |t| {
                let mut r = KillRequest::new();
                r.id = i.clone();
                r.signal = sig;
                outcome(t.kill(ctx(), &r))
            },
        );
    }

    // Update: resources that are not resources, and keys that would leave the cgroup.
    let target = dir.join("update-target");
    std::fs::write(&target, "safe").unwrap();
    let escape = format!(
        "{}{}",
        "../".repeat(12),
        target.display().to_string().trim_start_matches('/')
    );
    let updates: Vec<(&str, Option<String>, String)> = vec![
        ("no resources", None, "no resources".into()),
        (
            "resources that are not JSON",
            Some("not json".into()),
            "not json".into(),
        ),
        (
            "resources of the wrong shape",
            Some(r#"{"cpu":"lots"}"#.into()),
            "cpu".into(),
        ),
        (
            "a negative CPU period",
            Some(r#"{"cpu":{"period":-1}}"#.into()),
            "period".into(),
        ),
        (
            "a unified key that climbs out",
            Some(format!(r#"{{"unified":{{"{escape}":"owned"}}}}"#)),
            "../".into(),
        ),
        (
            "a unified key that is absolute",
            Some(format!(
                r#"{{"unified":{{"{}":"owned"}}}}"#,
                target.display()
            )),
            target.display().to_string(),
        ),
        (
            "a unified key that is empty",
            Some(r#"{"unified":{"":"1"}}"#.into()),
            "\"\"".into(),
        ),
        (
            "4 KiB of garbage",
            Some("{".repeat(4096)),
            "4096 bytes".into(),
        ),
    ];
    for (what, json, names) in updates {
        let i = id.clone();
        c.expect(
            &format!("Update with {what}"),
            Code::INVALID_ARGUMENT,
            &names,
            |t| {
                let mut r = UpdateTaskRequest::new();
                r.id = i.clone();
                if let Some(j) = json {
                    r.resources = Some(any("", j.into_bytes())).into();
                }
                outcome(t.update(ctx(), &r))
            },
        );
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "safe");

    // Checkpoint: paths that are not absolute, options of a type nobody sends.
    let mut rel_work = CheckpointOptions::new();
    rel_work.work_path = "work/rel".into();
    let checkpoints: Vec<(&str, &str, Option<Any>, &str)> = vec![
        ("a relative image path", "cp/rel", None, "cp/rel"),
        (
            "a relative work path",
            "/tmp/cp",
            Some(any(
                "containerd.runc.v1.CheckpointOptions",
                rel_work.write_to_bytes().unwrap(),
            )),
            "work/rel",
        ),
        (
            "options of an unknown type",
            "/tmp/cp",
            Some(any("example.com/Nope", vec![])),
            "example.com/Nope",
        ),
    ];
    for (what, path, opts, names) in checkpoints {
        let i = id.clone();
        c.expect(
            &format!("Checkpoint with {what}"),
            Code::INVALID_ARGUMENT,
            names,
            |t| {
                let mut r = CheckpointTaskRequest::new();
                r.id = i.clone();
                r.path = path.into();
                r.options = opts.into();
                outcome(t.checkpoint(ctx(), &r))
            },
        );
    }

    // A container of this shim's own, deleted and created again under the same ID.
    let reused = unique("hostile-reuse");
    let bundle = sibling_bundle(&id, &reused, &dir);
    for round in 0..2 {
        let mut r = create_req(&reused, bundle.to_str().unwrap());
        r.stdout = String::new();
        let pid = c
            .client
            .create(ctx(), &r)
            .unwrap_or_else(|e| panic!("create {reused} (round {round}): {e:?}"))
            .pid;
        let mut s = StartRequest::new();
        s.id = reused.clone();
        c.client.start(ctx(), &s).expect("start reused");
        let mut k = KillRequest::new();
        k.id = reused.clone();
        k.signal = 9;
        c.client.kill(ctx(), &k).expect("kill reused");
        let mut w = WaitRequest::new();
        w.id = reused.clone();
        assert_eq!(
            c.client.wait(ctx(), &w).expect("wait reused").exit_status,
            137
        );
        let mut d = DeleteRequest::new();
        d.id = reused.clone();
        let del = c.client.delete(ctx(), &d).expect("delete reused");
        assert_eq!(del.pid, pid);
        c.log.push(format!(
            "create/start/kill/delete of {reused}, round {round}: pid {pid}, exit 137"
        ));
        assert_nothing_left(&reused);
        c.still_serving("reuse");
    }
    // The same bundle with a unified cgroup key that climbs out of the cgroup.
    let cfg = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    spec["linux"]["resources"]["unified"] = serde_json::json!({ escape.clone(): "owned" });
    std::fs::write(&cfg, spec.to_string()).unwrap();
    let (r, b) = (reused.clone(), bundle.to_string_lossy().into_owned());
    c.expect(
        "Create whose config.json has a unified key that climbs out",
        Code::INVALID_ARGUMENT,
        "../",
        |t| outcome(t.create(ctx(), &create_req(&r, &b))),
    );
    if c.wrong > 0 {
        // HOSTILE_KEEP_GOING on a build that created it: remove it and go on.
        let mut d = DeleteRequest::new();
        d.id = reused.clone();
        let _ = c.client.delete(ctx(), &d);
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "safe");
    assert_nothing_left(&reused);
    let r = reused.clone();
    c.expect(
        "State of a deleted container",
        Code::NOT_FOUND,
        &reused,
        |t| {
            let mut s = StateRequest::new();
            s.id = r.clone();
            outcome(t.state(ctx(), &s))
        },
    );

    // Last: on a shim that blocks on a FIFO, these stop it for good.
    let fifo_cfg = dir.join("options.fifo");
    mkfifo(&fifo_cfg);
    let link_cfg = dir.join("options-link.toml");
    std::os::unix::fs::symlink(&fifo_cfg, &link_cfg).unwrap();
    let secret_cfg = dir.join("secret.toml");
    std::fs::write(&secret_cfg, "SystemdCgroup = \"s3cr3t-value\"\n").unwrap();
    let options: Vec<(&str, Any, String)> = vec![
        (
            "unknown options type",
            any("example.com/Bogus", vec![1, 2, 3]),
            "example.com/Bogus".into(),
        ),
        (
            "runc options that do not decode",
            any("containerd.runc.v1.Options", vec![0x0a, 0xff]),
            "containerd.runc.v1.Options".into(),
        ),
        (
            "TOML that does not parse",
            cri_options(3, "SystemdCgroup = = ="),
            "line 1".into(),
        ),
        (
            "config_path that is a FIFO",
            cri_options(2, fifo_cfg.to_str().unwrap()),
            fifo_cfg.to_string_lossy().into(),
        ),
        (
            "config_path that links to a FIFO",
            cri_options(2, link_cfg.to_str().unwrap()),
            link_cfg.to_string_lossy().into(),
        ),
        (
            "config_path that is a device",
            cri_options(2, "/dev/zero"),
            "/dev/zero".into(),
        ),
        (
            "config_path that is a directory",
            cri_options(2, dir.to_str().unwrap()),
            dir.to_string_lossy().into(),
        ),
        (
            "config_path that is relative",
            cri_options(2, "rel.toml"),
            "rel.toml".into(),
        ),
        (
            "config_path that is absent",
            cri_options(2, "/nonexistent/o.toml"),
            "/nonexistent/o.toml".into(),
        ),
        (
            "config_path with a bad value",
            cri_options(2, secret_cfg.to_str().unwrap()),
            "line 1 column 17".into(),
        ),
    ];
    for (what, opts, names) in options {
        let f = fresh.clone();
        c.expect(
            &format!("Create with {what}"),
            Code::INVALID_ARGUMENT,
            &names,
            |t| {
                let mut r = create_req(&f, "/nonexistent/bundle");
                r.options = Some(opts).into();
                let o = outcome(t.create(ctx(), &r));
                if let Err((_, m)) = &o {
                    assert!(!m.contains("s3cr3t"), "{what}: {m}");
                }
                o
            },
        );
    }

    // Create: stdio that is not what it claims. Stdio is opened before the bundle is read,
    // so a missing bundle never hides these.
    let fifo = dir.join("out.fifo");
    mkfifo(&fifo);
    let fifo_link = dir.join("out-link");
    std::os::unix::fs::symlink(&fifo, &fifo_link).unwrap();
    let regular = dir.join("regular");
    std::fs::write(&regular, "").unwrap();
    let deep = dir.join("d".repeat(300));
    let d = dir.display();
    let stdio: Vec<(&str, &str, String, Code, String)> = vec![
        (
            "stdout that is a directory",
            "stdout",
            d.to_string(),
            Code::INVALID_ARGUMENT,
            "is a directory".into(),
        ),
        (
            "stdin that is a directory",
            "stdin",
            d.to_string(),
            Code::INVALID_ARGUMENT,
            "is a directory".into(),
        ),
        (
            "stdout that is absent",
            "stdout",
            format!("{d}/absent"),
            Code::NOT_FOUND,
            format!("{d}/absent"),
        ),
        (
            "stdout that is a regular file",
            "stdout",
            regular.display().to_string(),
            Code::INVALID_ARGUMENT,
            "not a fifo".into(),
        ),
        (
            "stderr that is a device",
            "stderr",
            "/dev/null".into(),
            Code::INVALID_ARGUMENT,
            "character device".into(),
        ),
        (
            "stdout whose name is too long",
            "stdout",
            deep.display().to_string(),
            Code::INVALID_ARGUMENT,
            "dddd".into(),
        ),
        (
            "stdout longer than PATH_MAX",
            "stdout",
            format!("/{}", "p/".repeat(3000)),
            Code::INVALID_ARGUMENT,
            "stdout".into(),
        ),
        (
            "stdout with a NUL byte",
            "stdout",
            format!("{d}/a\0b"),
            Code::INVALID_ARGUMENT,
            "stdout".into(),
        ),
        (
            "stdout relative",
            "stdout",
            "relative/fifo".into(),
            Code::INVALID_ARGUMENT,
            "relative/fifo".into(),
        ),
        (
            "stdout with an unknown scheme",
            "stdout",
            "syslog://host/x".into(),
            Code::INVALID_ARGUMENT,
            "syslog".into(),
        ),
        (
            "file:// stdout that is a FIFO",
            "stdout",
            format!("file://{}", fifo.display()),
            Code::INVALID_ARGUMENT,
            "a fifo".into(),
        ),
        (
            "file:// stdout that links to a FIFO",
            "stdout",
            format!("file://{}", fifo_link.display()),
            Code::INVALID_ARGUMENT,
            "a fifo".into(),
        ),
        (
            "file:// stdout that is a device",
            "stdout",
            "file:///dev/null".into(),
            Code::INVALID_ARGUMENT,
            "/dev/null".into(),
        ),
        (
            "file:// stdin that is a FIFO",
            "stdin",
            format!("file://{}", fifo.display()),
            Code::INVALID_ARGUMENT,
            "a fifo".into(),
        ),
        (
            "file:// stdout that is relative",
            "stdout",
            "file://relative/log".into(),
            Code::INVALID_ARGUMENT,
            "file://relative/log".into(),
        ),
        (
            "binary:// stdout with a relative logger",
            "stdout",
            "binary://relative/logger".into(),
            Code::INVALID_ARGUMENT,
            "binary://relative/logger".into(),
        ),
        (
            "binary:// stderr without stdout",
            "stderr",
            "binary:///bin/true".into(),
            Code::INVALID_ARGUMENT,
            "binary:///bin/true".into(),
        ),
    ];
    for (what, which, path, want, names) in stdio {
        let f = fresh.clone();
        c.expect(&format!("Create with {what}"), want, &names, |t| {
            let mut r = create_req(&f, "/nonexistent/bundle");
            match which {
                "stdin" => r.stdin = path.clone(),
                "stdout" => r.stdout = path.clone(),
                _ => r.stderr = path.clone(),
            }
            outcome(t.create(ctx(), &r))
        });
    }
    assert!(leftovers(&fresh).is_empty(), "{:?}", leftovers(&fresh));
    assert_eq!(c.wrong, 0, "wrong answers (listed above)");
    let tried = c.log.len();
    assert!(tried >= 100, "only {tried} requests");
    // Print the list for the closing note (shown with --nocapture).
    for l in &c.log {
        println!("{l}");
    }
    println!("{tried} hostile requests");
    assert_eq!(
        c.client
            .connect(ctx(), &ConnectRequest::new())
            .expect("connect")
            .shim_pid,
        shim_pid,
        "the shim restarted"
    );
    drop(c);
    drop(guard);
    assert_nothing_left(&id);
    assert_nothing_left(&fresh);
    // Nothing of ours in the state root: no leftover state dir, exec spec or socket.
    let root = Path::new("/run/containerd/youki").join(NS);
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            !n.contains(&id) && !n.contains(&fresh) && !n.contains(&reused),
            "left in the state root: {n}"
        );
    }
}

/// A bundle for a second container in the live container's shim: its config with a new
/// cgroup and a process that waits, and its (already mounted) rootfs, read-only.
fn sibling_bundle(live: &str, id: &str, dir: &Path) -> PathBuf {
    let live_bundle = containerd_state()
        .join("io.containerd.runtime.v2.task")
        .join(NS)
        .join(live);
    let text = std::fs::read_to_string(live_bundle.join("config.json")).expect("live config");
    let mut spec: serde_json::Value = serde_json::from_str(&text).expect("config json");
    spec["root"] = serde_json::json!({
        "path": live_bundle.join("rootfs").to_string_lossy(),
        "readonly": true,
    });
    spec["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NS}/{id}"));
    let bundle = dir.join(format!("bundle-{id}"));
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    std::fs::write(bundle.join("config.json"), spec.to_string()).expect("config.json");
    bundle
}
