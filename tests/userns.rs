//! User namespaces through a real containerd: a container with several uid and gid ranges
//! (containerd's TestUserNamespaces/*MultipleMap) starts and sees exactly its maps.

mod common;

use common::client::{Client, Fifos};
use common::*;

/// The numbers of a /proc/<pid>/{uid,gid}_map, range by range.
fn ranges(text: &str) -> Vec<Vec<u64>> {
    text.lines()
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect()
}

#[test]
fn several_id_ranges_are_written_as_runc_does() {
    // (uid ranges, gid ranges) as containerd's test has them: host root kept for the first
    // IDs, the rest shifted.
    let cases = [
        (
            [(0, 0, 10), (10, 1000, 65535)],
            [(0, 0, 20), (20, 2000, 65535)],
        ),
        (
            [(0, 0, 20), (20, 2000, 65535)],
            [(0, 0, 20), (20, 2000, 65535)],
        ),
    ];
    let c = Client::new();
    for (n, (uids, gids)) in cases.iter().enumerate() {
        let id = unique(&format!("userns{n}"));
        create_container(&id);
        let _guard = RemoveOnDrop(id.clone());
        let json = |r: &[(u32, u32, u32); 2]| -> serde_json::Value {
            r.iter()
                .map(|(c, h, s)| serde_json::json!({"containerID": c, "hostID": h, "size": s}))
                .collect()
        };
        c.edit_spec(&id, |s| {
            let linux = &mut s["linux"];
            linux["namespaces"]
                .as_array_mut()
                .expect("namespaces")
                .push(serde_json::json!({"type": "user"}));
            linux["uidMappings"] = json(uids);
            linux["gidMappings"] = json(gids);
            // containerd's test runs as uid 34 ("backup"): an ID of the second range.
            s["process"]["user"] = serde_json::json!({"uid": 34, "gid": 34});
            s["process"]["args"] = serde_json::json!([
                "sh",
                "-c",
                "cat /proc/self/uid_map; echo; cat /proc/self/gid_map; echo; id -u; id -g"
            ]);
        });
        let f = Fifos::new(&id);
        let out = f.read_stdout(None);
        c.create_task(&id, &f, false)
            .unwrap_or_else(|e| panic!("case {n}: create: {}", e.message()));
        c.start(&id, "").expect("start");
        assert_eq!(c.wait(&id, ""), 0, "case {n}");
        let out = String::from_utf8_lossy(&out.join().expect("reader")).into_owned();
        let parts: Vec<&str> = out.split("\n\n").collect();
        assert_eq!(parts.len(), 3, "case {n}: {out}");
        let want = |r: &[(u32, u32, u32); 2]| -> Vec<Vec<u64>> {
            r.iter()
                .map(|&(c, h, s)| vec![c.into(), h.into(), s.into()])
                .collect()
        };
        assert_eq!(ranges(parts[0]), want(uids), "case {n}: uid_map {out}");
        assert_eq!(ranges(parts[1]), want(gids), "case {n}: gid_map {out}");
        assert_eq!(parts[2].trim(), "34\n34", "case {n}: {out}");
        c.delete_task(&id);
    }
}
