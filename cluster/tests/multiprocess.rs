//! Real clusters: every node is a separate `fathom-cluster-node` process. As root with
//! iproute2, each node gets its own network namespace on a bridge (10.214.K.0/24, one
//! "machine" per node, default ports); otherwise nodes share loopback on distinct ports.
//! Set FATHOM_TEST_LOOPBACK=1 to force loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fathom-cluster-node");

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Namespaces joined by a bridge that lives in its own namespace; the test process
/// reaches the nodes through one more veth with address .254.
struct Netns {
    k: u8,
    nodes: usize,
    /// Per node: 0 = on the main bridge, r > 0 = on region r's bridge, which reaches
    /// the main one through one veth pair (cut it to cut the region off).
    regions: Vec<u8>,
}

impl Netns {
    fn ns(&self, i: usize) -> String {
        format!("fcl-{}-n{}", self.k, i)
    }
    fn br(&self) -> String {
        format!("fcl-{}-br", self.k)
    }
    fn ip(&self, i: usize) -> String {
        format!("10.214.{}.{}", self.k, i)
    }

    fn create_in_regions(k: u8, regions: Vec<u8>) -> Result<Netns, String> {
        let nodes = regions.len();
        let n = Netns { k, nodes, regions };
        n.destroy(); // leftovers of a crashed run
        let br = n.br();
        sh(&["netns", "add", &br])?;
        sh(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        sh(&["-n", &br, "link", "set", "br0", "up"])?;
        let mut made: BTreeSet<u8> = BTreeSet::new();
        for &r in n.regions.iter().filter(|&&r| r > 0) {
            if made.insert(r) {
                let (rb, up, down) = (format!("br{r}"), format!("r{r}up"), format!("r{r}dn"));
                sh(&["-n", &br, "link", "add", &rb, "type", "bridge"])?;
                sh(&["-n", &br, "link", "set", &rb, "up"])?;
                sh(&["-n", &br, "link", "add", &up, "type", "veth", "peer", "name", &down])?;
                sh(&["-n", &br, "link", "set", &up, "master", "br0", "up"])?;
                sh(&["-n", &br, "link", "set", &down, "master", &rb, "up"])?;
            }
        }
        for i in 1..=nodes {
            let ns = n.ns(i);
            let v = format!("fcl{k}n{i}");
            sh(&["netns", "add", &ns])?;
            sh(&[
                "link", "add", &v, "netns", &br, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            let master = match n.regions[i - 1] {
                0 => "br0".to_string(),
                r => format!("br{r}"),
            };
            sh(&["-n", &br, "link", "set", &v, "master", &master, "up"])?;
            sh(&["-n", &ns, "addr", "add", &format!("{}/24", n.ip(i)), "dev", "eth0"])?;
            sh(&["-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let (h, b) = (format!("fcl{k}h"), format!("fcl{k}b"));
        sh(&["link", "add", &h, "type", "veth", "peer", "name", &b, "netns", &br])?;
        sh(&["-n", &br, "link", "set", &b, "master", "br0", "up"])?;
        sh(&["addr", "add", &format!("10.214.{k}.254/24"), "dev", &h])?;
        sh(&["link", "set", &h, "up"])?;
        Ok(n)
    }

    /// Cut node `i` off the bridge (or reconnect it).
    fn set_link(&self, i: usize, up: bool) {
        let v = format!("fcl{}n{}", self.k, i);
        sh(&["-n", &self.br(), "link", "set", &v, if up { "up" } else { "down" }]).unwrap();
    }

    /// Cut region `r` off the rest (its nodes still reach each other), or reconnect it.
    fn set_region_link(&self, r: u8, up: bool) {
        let v = format!("r{r}up");
        sh(&["-n", &self.br(), "link", "set", &v, if up { "up" } else { "down" }]).unwrap();
    }

    fn destroy(&self) {
        let _ = sh(&["link", "del", &format!("fcl{}h", self.k)]);
        for i in 1..=self.nodes.max(8) {
            let _ = sh(&["netns", "del", &self.ns(i)]);
        }
        let _ = sh(&["netns", "del", &self.br()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.destroy();
    }
}

struct Node {
    id: u64,
    region: String,
    ns: Option<String>,
    raft: String,
    gossip: String,
    api: String,
    az: String,
    data: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn spawn(&mut self, seeds: &str) {
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        cmd.args(["--id", &self.id.to_string()])
            .args(["--region", &self.region, "--az", &self.az])
            .args(["--raft-addr", &self.raft, "--gossip-addr", &self.gossip])
            .args(["--api-addr", &self.api, "--seeds", seeds])
            .arg("--data-dir")
            .arg(&self.data)
            .args(&self.extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn node"));
    }

    /// SIGKILL: no shutdown path runs. `ip netns exec` execs the node, so this is its pid.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct TestCluster {
    nodes: Vec<Node>,
    seeds: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    net: Option<Netns>,
}

fn use_netns() -> bool {
    std::env::var_os("FATHOM_TEST_LOOPBACK").is_none()
        // SAFETY: geteuid has no preconditions and cannot fail.
        && unsafe { libc::geteuid() } == 0
        && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}

impl TestCluster {
    /// `k` keeps concurrent tests apart (subnet in netns mode, port range on loopback).
    fn new(k: u8, count: usize, extra: &[&str]) -> TestCluster {
        Self::in_regions(k, vec![0; count], extra)
    }

    /// Nodes on per-region bridges (`regions[i]` for node i+1, see [`Netns`]).
    fn in_regions(k: u8, regions: Vec<u8>, extra: &[&str]) -> TestCluster {
        let count = regions.len();
        let dir = tempfile::tempdir().unwrap();
        let net = if use_netns() {
            match Netns::create_in_regions(k, regions) {
                Ok(n) => Some(n),
                Err(e) => {
                    eprintln!("network namespaces unavailable ({e}); using loopback");
                    None
                }
            }
        } else {
            None
        };
        let base = 30_000 + (std::process::id() % 400) as u16 * 60 + k as u16 * 15;
        let mut nodes = Vec::new();
        for i in 1..=count {
            let (host, raft, gossip, api) = match &net {
                Some(n) => (n.ip(i), 20040, 20041, 20042),
                None => {
                    let p = base + i as u16 * 3;
                    ("127.0.0.1".to_string(), p, p + 1, p + 2)
                }
            };
            nodes.push(Node {
                id: i as u64,
                region: "r1".to_string(),
                ns: net.as_ref().map(|n| n.ns(i)),
                raft: format!("{host}:{raft}"),
                gossip: format!("{host}:{gossip}"),
                api: format!("{host}:{api}"),
                az: format!("az-{i}"),
                data: dir.path().join(format!("n{i}")),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
                log: dir.path().join(format!("n{i}.log")),
            });
        }
        let seeds = nodes.iter().take(2).map(|n| n.gossip.clone()).collect::<Vec<_>>().join(",");
        let mode = if net.is_some() { "network namespaces on a bridge" } else { "loopback" };
        eprintln!("cluster {k}: {count} nodes over {mode}");
        TestCluster {
            nodes,
            seeds,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            _dir: dir,
            net,
        }
    }

    fn start(&mut self, i: usize) {
        let seeds = self.seeds.clone();
        self.nodes[i - 1].spawn(&seeds);
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    fn dump_logs(&self) {
        for n in &self.nodes {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("--- node {} log tail ---", n.id);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }

    async fn get(&self, i: usize, path: &str) -> Result<Value, String> {
        let url = format!("http://{}{}", self.node(i).api, path);
        let r = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        r.json().await.map_err(|e| e.to_string())
    }

    async fn post(&self, i: usize, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("http://{}{}", self.node(i).api, path);
        let r = self.http.post(url).json(&body).send().await.map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        match v.get("Err") {
            Some(e) => Err(e.to_string()),
            None => Ok(v.get("Ok").cloned().unwrap_or(v)),
        }
    }

    async fn status(&self, i: usize) -> Option<Value> {
        self.get(i, "/status").await.ok()
    }

    async fn state(&self, i: usize, linearizable: bool) -> Result<Value, String> {
        let v = self.get(i, &format!("/state?linearizable={linearizable}")).await?;
        match v.get("Ok") {
            Some(s) => Ok(s.clone()),
            None => Err(v.to_string()),
        }
    }

    async fn put(&self, i: usize, key: &str) -> Result<(), String> {
        let r = self.post(i, "/write", json!({"op": "put", "key": key, "value": "v"})).await?;
        if r["result"] == "ok" {
            Ok(())
        } else {
            Err(r.to_string())
        }
    }

    /// A write through node `i` sent from inside its own namespace, the only place that
    /// still reaches it once its link is cut; gives up after 5s. Returns the raw reply.
    fn put_from_inside(&self, i: usize, key: &str) -> String {
        let n = self.node(i);
        let ns = n.ns.as_deref().expect("needs network namespaces");
        let body = json!({"op": "put", "key": key, "value": "v"}).to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-s", "-m", "5", "-X", "POST"])
            .args(["-H", "content-type: application/json", "-d", &body])
            .arg(format!("http://{}/write", n.api))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A POST to node `i`'s API sent from inside its own namespace (the only place that
    /// reaches it while it is cut off); gives up after 10s. The `Ok` value or the error.
    fn post_from_inside(&self, i: usize, path: &str, body: Value) -> Result<Value, String> {
        let n = self.node(i);
        let ns = n.ns.as_deref().expect("needs network namespaces");
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-s", "-m", "10", "-X", "POST"])
            .args(["-H", "content-type: application/json", "-d", &body.to_string()])
            .arg(format!("http://{}{}", n.api, path))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: Value = serde_json::from_str(&text).map_err(|_| format!("no answer: {text:?}"))?;
        match v.get("Err") {
            Some(e) => Err(e.to_string()),
            None => Ok(v.get("Ok").cloned().unwrap_or(v)),
        }
    }

    /// Poll until every listed node reports the same leader and voter set.
    async fn agreed(&self, on: &[usize], voters: &[u64]) -> Option<u64> {
        let mut leader = None;
        for &i in on {
            let s = self.status(i).await?;
            let l = s["leader"].as_u64()?;
            let v: Vec<u64> = serde_json::from_value(s["voters"].clone()).ok()?;
            if v != voters || leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        leader
    }
}

async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keys(state: &Value) -> BTreeSet<String> {
    state["kv"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

const LONG: Duration = Duration::from_secs(60);

/// Checks a dictionary is a bijection and returns it.
fn dict(state: &Value, tag_type: &str) -> BTreeMap<String, u64> {
    let d = &state["tags"][tag_type];
    let by_name: BTreeMap<String, u64> = serde_json::from_value(d["by_name"].clone()).unwrap();
    let by_id: BTreeMap<String, String> = serde_json::from_value(d["by_id"].clone()).unwrap();
    assert_eq!(by_name.len(), by_id.len(), "dictionary is not a bijection");
    for (name, id) in &by_name {
        assert_eq!(by_id.get(&id.to_string()), Some(name), "id {id} bound twice");
    }
    by_name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_fail_over_and_catch_up_by_snapshot() {
    let mut c = TestCluster::new(1, 3, &["--bootstrap-expect", "3", "--tag-block", "256"]);
    for i in 1..=3 {
        c.start(i);
    }

    // The cluster forms from the seed list and every node agrees on it.
    let leader =
        poll("status to agree on 3 nodes", LONG, || c.agreed(&[1, 2, 3], &[1, 2, 3])).await;
    eprintln!("formed: leader {leader}");

    // Gossip: everyone sees everyone with topology; load spreads.
    poll("gossip to converge", LONG, || async {
        for i in 1..=3 {
            let g = c.get(i, "/gossip").await.ok()?;
            let live = g["live"].as_array()?;
            let azs: Vec<&str> = live.iter().filter_map(|n| n["az"].as_str()).collect();
            if azs != ["az-1", "az-2", "az-3"] {
                return None;
            }
        }
        Some(())
    })
    .await;
    c.post(2, "/load", json!({"agents": 42, "records_per_sec": 1000.0, "disk_used_bytes": 7, "disk_free_bytes": 9}))
        .await
        .unwrap();
    poll("load gossip", LONG, || async {
        let g = c.get(3, "/gossip").await.ok()?;
        let n2 = g["live"].as_array()?.iter().find(|n| n["id"] == 2)?.clone();
        (n2["load"]["agents"] == 42).then_some(())
    })
    .await;

    // Writes through every node (followers forward) are visible on all nodes.
    let mut committed = BTreeSet::new();
    for round in 0..10 {
        for i in 1..=3 {
            let k = format!("k-{i}-{round}");
            c.put(i, &k).await.unwrap();
            committed.insert(k);
        }
    }
    let r = c.post(3, "/write", json!({"op": "upsert_az", "name": "z", "region": "nowhere"})).await;
    assert!(r.unwrap()["result"] == "rejected", "metadata rules apply through forwarding");
    for i in 1..=3 {
        let s = c.state(i, true).await.unwrap();
        assert!(committed.is_subset(&keys(&s)), "node {i} misses committed writes");
    }
    poll("every node to register itself in the metadata", LONG, || async {
        for i in 1..=3 {
            let s = c.state(i, false).await.ok()?;
            let azs: Vec<&str> =
                s["nodes"].as_object()?.values().filter_map(|n| n["az"].as_str()).collect();
            if azs != ["az-1", "az-2", "az-3"] {
                return None;
            }
        }
        Some(())
    })
    .await;

    // Tag ids: three nodes allocate overlapping name sets at once.
    let batch = |i: usize, round: usize| -> Vec<String> {
        let mut v: Vec<String> =
            (0..100).map(|j| format!("pod-{}", (j * (i + 1) + round * 37) % 150)).collect();
        v.extend((0..50).map(|j| format!("own-{i}-{round}-{j}")));
        v
    };
    let mut answers: Vec<(String, u64)> = Vec::new();
    for round in 0..5 {
        let futs = (1..=3).map(|i| {
            let names = batch(i, round);
            let c = &c;
            async move {
                let ids =
                    c.post(i, "/tags", json!({"tag_type": "pod", "names": names})).await.unwrap();
                let ids: Vec<u64> = serde_json::from_value(ids).unwrap();
                names.into_iter().zip(ids).collect::<Vec<_>>()
            }
        });
        for v in futures::future::join_all(futs).await {
            answers.extend(v);
        }
    }
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut owner: BTreeMap<u64, String> = BTreeMap::new();
    for (name, id) in &answers {
        assert_ne!(*id, 0);
        assert_eq!(*seen.entry(name.clone()).or_insert(*id), *id, "{name} got two ids");
        assert_eq!(owner.entry(*id).or_insert(name.clone()), name, "id {id} given to two names");
    }
    for i in 1..=3 {
        let d = dict(&c.state(i, true).await.unwrap(), "pod");
        for (name, id) in &seen {
            assert_eq!(d.get(name), Some(id), "node {i} disagrees on {name}");
        }
    }

    // Throughput through Raft with batching, from a follower (forwarded writes).
    let follower = (1..=3).find(|&i| i as u64 != leader).unwrap();
    let t = Instant::now();
    let mut n = 0;
    for b in 0..20 {
        let names: Vec<String> = (0..500).map(|j| format!("svc-{b}-{j}")).collect();
        let ids = c
            .post(follower, "/tags", json!({"tag_type": "service", "names": names}))
            .await
            .unwrap();
        n += ids.as_array().unwrap().len();
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!("FIGURE tag ids allocated: {n} new names in {secs:.2}s = {:.0} ids/s (batches of 500, via follower)", n as f64 / secs);
    let t = Instant::now();
    for j in 0..100 {
        c.post(follower, "/tags", json!({"tag_type": "host", "names": [format!("h{j}")]}))
            .await
            .unwrap();
    }
    eprintln!(
        "FIGURE single-name allocations: {:.0}/s (one Raft entry each, via follower)",
        100.0 / t.elapsed().as_secs_f64()
    );

    // kill -9 the leader: a new one is elected and nothing committed is lost.
    let li = leader as usize;
    c.nodes[li - 1].kill9();
    let killed_at = Instant::now();
    let rest: Vec<usize> = (1..=3).filter(|&i| i != li).collect();
    let new_leader = poll("a new leader", LONG, || async {
        let l = c.agreed(&rest, &[1, 2, 3]).await?;
        (l != leader).then_some(l)
    })
    .await;
    eprintln!(
        "FIGURE failover: node {new_leader} leads {:.2}s after kill -9 of node {leader}",
        killed_at.elapsed().as_secs_f64()
    );
    for &i in &rest {
        let s = c.state(i, true).await.unwrap();
        assert!(committed.is_subset(&keys(&s)), "node {i} lost committed writes");
    }
    // Writes continue, enough to leave the dead node far behind; then compact the log
    // so it can only catch up from a snapshot.
    for j in 0..150 {
        let k = format!("after-{j}");
        c.put(rest[j % 2], &k).await.unwrap();
        committed.insert(k);
    }
    // The leader keeps log entries an in-flight replication still needs, so compaction
    // is retried until the purge is done.
    let nl = new_leader as usize;
    let before = c.status(nl).await.unwrap()["last_applied"].as_u64().unwrap();
    let purged = poll("the leader to purge its log", LONG, || async {
        for &i in &rest {
            c.post(i, "/compact", json!({})).await.ok()?;
        }
        let p = c.status(nl).await?["purged_index"].as_u64()?;
        (p >= before).then_some(p)
    })
    .await;

    // The killed node restarts from its disk and catches up by snapshot.
    c.start(li);
    poll("the restarted node to catch up", LONG, || async {
        let s = c.status(li).await?;
        (s["last_applied"].as_u64()? >= before).then_some(())
    })
    .await;
    let s = c.status(li).await.unwrap();
    assert!(
        s["snapshot_index"].as_u64().unwrap_or(0) >= purged,
        "restarted node should have installed a snapshot at >= {purged}: {s}"
    );
    let st = c.state(li, false).await.unwrap();
    assert!(committed.is_subset(&keys(&st)), "restarted node misses committed writes");
    let d = dict(&st, "pod");
    for (name, id) in &seen {
        assert_eq!(d.get(name), Some(id));
    }
    // And it takes part again: a write through it is seen everywhere.
    c.put(li, "back").await.unwrap();
    for i in 1..=3 {
        assert!(keys(&c.state(i, true).await.unwrap()).contains("back"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_and_a_partitioned_leader() {
    let mut c = TestCluster::new(2, 4, &["--bootstrap-expect", "3"]);
    // Node 4 never bootstraps: it joins only when added.
    c.nodes[3].extra = vec!["--bootstrap-expect".into(), "0".into()];
    for i in 1..=3 {
        c.start(i);
    }
    let leader = poll("3-node cluster", LONG, || c.agreed(&[1, 2, 3], &[1, 2, 3])).await;
    for j in 0..20 {
        c.put(1 + j % 3, &format!("pre-{j}")).await.unwrap();
    }

    // Garbage on the Raft port is refused, and the node carries on.
    let url = format!("http://{}/raft/append", c.node(2).raft);
    let r = c
        .http
        .post(url)
        .header("content-type", "application/json")
        .body("{\"vote\": 7")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    c.start(4);
    let raft4 = c.node(4).raft.clone();
    let follower = (1..=3).find(|&i| i as u64 != leader).unwrap();
    c.post(follower, "/admin", json!({"op": "add_learner", "id": 4, "addr": raft4})).await.unwrap();
    poll("node 4 to see itself as a learner", LONG, || async {
        (c.status(4).await?["learners"] == json!([4])).then_some(())
    })
    .await;
    let st = c.state(4, false).await.unwrap();
    assert!((0..20).all(|j| keys(&st).contains(&format!("pre-{j}"))), "learner got the log");

    c.post(follower, "/admin", json!({"op": "promote", "id": 4})).await.unwrap();
    poll("4 voters everywhere", LONG, || c.agreed(&[1, 2, 3, 4], &[1, 2, 3, 4])).await;
    c.put(4, "via-4").await.unwrap();

    c.post(4, "/admin", json!({"op": "remove", "id": 3})).await.unwrap();
    let leader = poll("3 voters after removal", LONG, || c.agreed(&[1, 2, 4], &[1, 2, 4])).await;

    if let Some(net) = &c.net {
        // Cut the leader off: the majority elects another and commits; the old leader
        // cannot commit anything; after healing it has every majority write.
        let li = leader as usize;
        let majority: Vec<usize> = [1, 2, 4].into_iter().filter(|&i| i != li).collect();
        net.set_link(li, false);
        let t = Instant::now();
        let nl = poll("a leader on the majority side", LONG, || async {
            let l = c.agreed(&majority, &[1, 2, 4]).await?;
            (l != leader).then_some(l)
        })
        .await;
        eprintln!(
            "FIGURE partition failover: node {nl} leads {:.2}s after cutting node {leader} off",
            t.elapsed().as_secs_f64()
        );
        for j in 0..30 {
            c.put(majority[j % 2], &format!("maj-{j}")).await.unwrap();
        }
        // The cut-off node cannot commit: a write through it does not complete.
        let body = c.put_from_inside(li, "minority");
        assert!(!body.contains("\"ok\""), "isolated node committed a write: {body}");
        net.set_link(li, true);
        poll("the healed node to catch up", LONG, || async {
            let st = c.state(li, false).await.ok()?;
            (0..30).all(|j| keys(&st).contains(&format!("maj-{j}"))).then_some(())
        })
        .await;
        poll("agreement after healing", LONG, || c.agreed(&[1, 2, 4], &[1, 2, 4])).await;
        c.put(li, "healed").await.unwrap();
        for i in [1, 2, 4] {
            let k = keys(&c.state(i, true).await.unwrap());
            assert!(k.contains("healed"));
            assert!(!k.contains("minority"), "node {i} has the minority's uncommitted write");
        }
    } else {
        eprintln!("partition part skipped: needs network namespaces");
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_converge_and_detect_a_dead_node() {
    let mut c = TestCluster::new(3, 5, &["--bootstrap-expect", "5"]);
    let t = Instant::now();
    for i in 1..=5 {
        c.start(i);
    }
    let all = [1, 2, 3, 4, 5];
    poll("gossip to show 5 live nodes everywhere", LONG, || async {
        for i in all {
            if c.get(i, "/gossip").await.ok()?["live"].as_array()?.len() != 5 {
                return None;
            }
        }
        Some(())
    })
    .await;
    eprintln!("FIGURE gossip convergence, 5 nodes: {:.2}s from spawn", t.elapsed().as_secs_f64());
    let leader = poll("5 voters everywhere", LONG, || c.agreed(&all, &[1, 2, 3, 4, 5])).await;
    eprintln!("FIGURE 5-node cluster formed: {:.2}s from spawn", t.elapsed().as_secs_f64());

    let li = leader as usize;
    c.nodes[li - 1].kill9();
    let killed = Instant::now();
    let rest: Vec<usize> = all.into_iter().filter(|&i| i != li).collect();
    poll("the failure detector to declare the leader dead", LONG, || async {
        for &i in &rest {
            let g = c.get(i, "/gossip").await.ok()?;
            let dead: Vec<u64> = serde_json::from_value(g["dead"].clone()).ok()?;
            let live = g["live"].as_array()?;
            if dead != [leader] || live.iter().any(|n| n["id"] == leader) {
                return None;
            }
        }
        Some(())
    })
    .await;
    eprintln!("FIGURE gossip failure detection: {:.2}s", killed.elapsed().as_secs_f64());
    let nl = poll("a new leader", LONG, || async {
        let l = c.agreed(&rest, &[1, 2, 3, 4, 5]).await?;
        (l != leader).then_some(l)
    })
    .await;
    eprintln!(
        "FIGURE 5-node failover: node {nl} leads {:.2}s after kill -9",
        killed.elapsed().as_secs_f64()
    );
    for &i in &rest {
        c.put(i, &format!("after-{i}")).await.unwrap();
    }
    for &i in &rest {
        let k = keys(&c.state(i, true).await.unwrap());
        assert!(rest.iter().all(|j| k.contains(&format!("after-{j}"))));
    }
}

/// Status counter of node `i` (e.g. `last_applied`), if it answers.
async fn counter(c: &TestCluster, i: usize, field: &str) -> Option<u64> {
    c.status(i).await?[field].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_az_partitioned_away_cannot_commit_and_catches_up() {
    let mut c = TestCluster::new(4, 5, &["--bootstrap-expect", "5"]);
    if c.net.is_none() {
        // Cutting links needs namespaces; only an explicit loopback request may skip.
        assert!(
            std::env::var_os("FATHOM_TEST_LOOPBACK").is_some(),
            "AZ partition test needs network namespaces: run as root with iproute2"
        );
        eprintln!("AZ partition test skipped: FATHOM_TEST_LOOPBACK is set");
        return;
    }
    // Three AZs: az-a holds nodes 1 and 2, az-b nodes 3 and 4, az-c node 5.
    let az_of = |i: usize| match i {
        1 | 2 => "az-a",
        3 | 4 => "az-b",
        _ => "az-c",
    };
    for i in 1..=5 {
        c.nodes[i - 1].az = az_of(i).to_string();
        c.start(i);
    }
    let all = [1, 2, 3, 4, 5];
    let voters = [1, 2, 3, 4, 5];
    let leader = poll("5 voters everywhere", LONG, || c.agreed(&all, &voters)).await;
    let mut committed = BTreeSet::new();
    for j in 0..20 {
        let k = format!("pre-{j}");
        c.put(1 + j % 5, &k).await.unwrap();
        committed.insert(k);
    }

    // Cut off the two-node AZ that holds the leader (az-a if node 5 leads), so the
    // majority side has to elect a new leader.
    let cut: Vec<usize> = match az_of(leader as usize) {
        "az-b" => vec![3, 4],
        _ => vec![1, 2],
    };
    let majority: Vec<usize> = all.into_iter().filter(|i| !cut.contains(i)).collect();
    eprintln!("leader {leader}; cutting off {} (nodes {cut:?})", az_of(cut[0]));
    let net = c.net.as_ref().unwrap();
    for &i in &cut {
        net.set_link(i, false);
    }
    let t = Instant::now();
    let nl = poll("a leader on the majority side", LONG, || async {
        let l = c.agreed(&majority, &voters).await?;
        majority.contains(&(l as usize)).then_some(l)
    })
    .await;
    poll("the first write committed by the majority", LONG, || async {
        c.put(majority[0], "first-after-cut").await.ok()
    })
    .await;
    committed.insert("first-after-cut".to_string());
    eprintln!(
        "FIGURE AZ partition: majority (leader {nl}) commits {:.2}s after cutting off {} ({} nodes, leader was {leader})",
        t.elapsed().as_secs_f64(),
        az_of(cut[0]),
        cut.len()
    );

    // Writes through the cut-off nodes do not commit.
    let mut lost = Vec::new();
    for &i in &cut {
        let k = format!("minority-{i}");
        let body = c.put_from_inside(i, &k);
        assert!(!body.contains("\"ok\""), "cut-off node {i} committed a write: {body}");
        lost.push(k);
    }

    // The majority carries on, far enough that the cut-off nodes can only catch up from
    // a snapshot once the log is compacted.
    for j in 0..150 {
        let k = format!("maj-{j}");
        c.put(majority[j % 3], &k).await.unwrap();
        committed.insert(k);
    }
    for &i in &majority {
        let k = keys(&c.state(i, true).await.unwrap());
        assert!(committed.is_subset(&k), "majority node {i} misses committed writes");
        assert!(lost.iter().all(|l| !k.contains(l)), "node {i} has a minority write");
    }
    let nl = nl as usize;
    let before = counter(&c, nl, "last_applied").await.unwrap();
    // Retried: the leader keeps entries an in-flight replication still needs.
    let purged = poll("the leader to purge its log", LONG, || async {
        for &i in &majority {
            c.post(i, "/compact", json!({})).await.ok()?;
        }
        let p = counter(&c, nl, "purged_index").await?;
        (p >= before).then_some(p)
    })
    .await;

    // Heal: both nodes catch up by snapshot and every node ends in the same state.
    for &i in &cut {
        net.set_link(i, true);
    }
    let healed = Instant::now();
    for &i in &cut {
        poll("a healed node to catch up", LONG, || async {
            (counter(&c, i, "last_applied").await? >= before).then_some(())
        })
        .await;
        let s = c.status(i).await.unwrap();
        assert!(
            s["snapshot_index"].as_u64().unwrap_or(0) >= purged,
            "healed node {i} should have installed a snapshot at >= {purged}: {s}"
        );
    }
    eprintln!(
        "FIGURE AZ heal: both cut-off nodes caught up by snapshot {:.2}s after healing",
        healed.elapsed().as_secs_f64()
    );
    poll("agreement on all 5 after healing", LONG, || c.agreed(&all, &voters)).await;
    let reference = keys(&c.state(nl, true).await.unwrap());
    poll("all 5 nodes to apply the same state", LONG, || async {
        let applied = counter(&c, all[0], "last_applied").await?;
        for i in all {
            let same = counter(&c, i, "last_applied").await? == applied
                && keys(&c.state(i, false).await.ok()?) == reference;
            if !same {
                return None;
            }
        }
        Some(())
    })
    .await;
    for i in all {
        let k = keys(&c.state(i, false).await.unwrap());
        assert!(committed.is_subset(&k), "node {i} misses committed writes");
        assert!(lost.iter().all(|l| !k.contains(l)), "node {i} has a minority write");
    }
    // The healed nodes take part again.
    c.put(cut[0], "healed").await.unwrap();
    for i in all {
        assert!(keys(&c.state(i, true).await.unwrap()).contains("healed"));
    }
}

/// The tag ids of region number `n` (the state machine's split: 24 low bits).
fn region_range(n: u64) -> std::ops::Range<u64> {
    (n << 24).max(1)..(n + 1) << 24
}

fn token(id: &str, region: &str) -> Value {
    json!({"op": "create_token", "id": id, "region": region, "az": "az", "pool": "p",
           "expires_at_ms": u64::MAX, "used_by": null, "revoked": false})
}

fn agent(id: &str, region: &str) -> Value {
    json!({"op": "upsert_agent", "id": id, "host": id, "pool": "p", "region": region,
           "az": "az", "cert_serial": "", "status": "enrolled", "ingest_node": null,
           "last_heartbeat_ms": 1, "config_version": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_cut_off_keeps_enrolling_and_allocating_tag_ids_in_its_own_group() {
    // Region 1: nodes 1, 2; region 2: nodes 3, 4; region 3: node 5. Global group: all
    // five (a cut-off region 1 leaves it a majority of three).
    let regions = vec![1, 1, 2, 2, 3];
    let mut c = TestCluster::in_regions(5, regions.clone(), &["--bootstrap-expect", "5"]);
    if c.net.is_none() {
        assert!(
            std::env::var_os("FATHOM_TEST_LOOPBACK").is_some(),
            "region partition test needs network namespaces: run as root with iproute2"
        );
        eprintln!("region partition test skipped: FATHOM_TEST_LOOPBACK is set");
        return;
    }
    let name = |i: usize| format!("reg{}", regions[i - 1]);
    for i in 1..=5 {
        let host = c.net.as_ref().unwrap().ip(i);
        let expect = regions.iter().filter(|&&r| r == regions[i - 1]).count().to_string();
        let n = &mut c.nodes[i - 1];
        n.region = name(i);
        n.extra.extend([
            "--region-raft-addr".to_string(),
            format!("{host}:20043"),
            "--region-bootstrap-expect".to_string(),
            expect,
        ]);
        c.start(i);
    }
    let all = [1, 2, 3, 4, 5];
    poll("5 global voters everywhere", LONG, || c.agreed(&all, &[1, 2, 3, 4, 5])).await;
    // Each region's group: its own nodes as voters, and its number from the global group.
    let mut numbers = BTreeMap::new();
    for i in all {
        let voters: Vec<u64> =
            (1..=5u64).filter(|&j| regions[j as usize - 1] == regions[i - 1]).collect();
        let number = poll("the region group formed and named", LONG, || async {
            let st = c.get(i, "/region/status").await.ok()?;
            let v: Vec<u64> = serde_json::from_value(st["voters"].clone()).ok()?;
            st["leader"].as_u64()?;
            let s = c.get(i, "/region/state").await.ok()?;
            let g = &s["Ok"]["region_group"];
            (v == voters && g["region"] == name(i).as_str()).then(|| g["number"].as_u64())?
        })
        .await;
        numbers.insert(name(i), number);
    }
    assert_eq!(
        numbers.values().collect::<BTreeSet<_>>().len(),
        3,
        "each region has its own number: {numbers:?}"
    );
    let r1 = region_range(numbers["reg1"]);
    let r2 = region_range(numbers["reg2"]);

    // Before the cut: tags of region 1 and region 2 come from their own ranges.
    let ids: Vec<u64> = serde_json::from_value(
        c.post(1, "/tags", json!({"tag_type": "pod", "names": ["web", "db"]})).await.unwrap(),
    )
    .unwrap();
    assert!(ids.iter().all(|id| r1.contains(id)), "{ids:?} outside {r1:?}");
    let ids2: Vec<u64> = serde_json::from_value(
        c.post(3, "/tags", json!({"tag_type": "pod", "names": ["web", "cache"]})).await.unwrap(),
    )
    .unwrap();
    assert!(ids2.iter().all(|id| r2.contains(id)), "{ids2:?} outside {r2:?}");

    // Cut region 1 off: its two nodes still reach each other, nobody else.
    let net = c.net.as_ref().unwrap();
    net.set_region_link(1, false);
    // The rest keeps committing global writes.
    poll("a global write on the majority side", LONG, || async {
        c.put(3, "global-after-cut").await.ok()
    })
    .await;
    for (j, i) in [3, 4, 5, 3, 4].into_iter().enumerate() {
        c.put(i, &format!("global-{j}")).await.unwrap();
    }
    // Inside region 1: a token is created and consumed, the agent recorded, through the
    // router (region commands go to the region group), from both of its nodes.
    let routed = |i: usize, body: Value| c.post_from_inside(i, "/routed-write", body);
    let ok = json!({"result": "ok"});
    let t = Instant::now();
    let created = poll("a token created inside the cut-off region", LONG, || async {
        routed(1, token("tok-1", "reg1")).ok()
    })
    .await;
    assert_eq!(created, ok);
    eprintln!(
        "FIGURE region cut: token committed in the cut-off region in {:.2}s (global writes \
         already committed on the other side)",
        t.elapsed().as_secs_f64()
    );
    let consume = json!({"op": "consume_token", "id": "tok-1", "agent": "agent-1", "now_ms": 5});
    assert_eq!(routed(2, consume).unwrap(), ok);
    let again = json!({"op": "consume_token", "id": "tok-1", "agent": "agent-x", "now_ms": 6});
    assert_eq!(
        routed(1, again).unwrap(),
        json!({"result": "rejected", "reason": "token already used"})
    );
    assert_eq!(routed(2, agent("agent-1", "reg1")).unwrap(), ok);
    // New tag names get ids inside region 1's range; known ones keep theirs.
    let inside: Vec<u64> = serde_json::from_value(
        c.post_from_inside(2, "/tags", json!({"tag_type": "pod", "names": ["web", "queue"]}))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(inside[0], ids[0]);
    assert!(r1.contains(&inside[1]) && !ids.contains(&inside[1]), "{inside:?}");
    // A global write from inside does not commit; a token for another region is refused.
    let global =
        c.post_from_inside(1, "/write", json!({"op": "put", "key": "from-cut", "value": "v"}));
    assert!(global.is_err(), "a cut-off region committed a global write: {global:?}");
    let other = routed(1, token("tok-2", "reg2"));
    assert!(other.unwrap_err().contains("written by its own nodes"));
    // Region 2 allocates at the same time, in its own range.
    let outside: Vec<u64> = serde_json::from_value(
        c.post(4, "/tags", json!({"tag_type": "pod", "names": ["queue"]})).await.unwrap(),
    )
    .unwrap();
    assert!(r2.contains(&outside[0]));

    // Heal: region 1 sees the global writes, and its own writes are still there.
    net.set_region_link(1, true);
    for i in [1, 2] {
        poll("a healed node to see the global writes", LONG, || async {
            let k = keys(&c.state(i, true).await.ok()?);
            (k.contains("global-after-cut") && (0..5).all(|j| k.contains(&format!("global-{j}"))))
                .then_some(())
        })
        .await;
        assert!(!keys(&c.state(i, false).await.unwrap()).contains("from-cut"));
    }
    for i in [1, 2] {
        let s = &c.get(i, "/region/state?linearizable=true").await.unwrap()["Ok"];
        assert_eq!(s["tokens"]["tok-1"]["used_by"], "agent-1");
        assert_eq!(s["agents"]["agent-1"]["region"], "reg1");
        assert!(s["tokens"].get("tok-2").is_none());
        let d = dict(s, "pod");
        assert_eq!(
            d,
            BTreeMap::from([
                ("web".to_string(), ids[0]),
                ("db".to_string(), ids[1]),
                ("queue".to_string(), inside[1]),
            ])
        );
    }
    // Other regions never held region 1's data; their dictionaries are their own.
    for i in [3, 4, 5] {
        let s = &c.get(i, "/region/state").await.unwrap()["Ok"];
        assert!(s["tokens"].get("tok-1").is_none() && s["agents"].get("agent-1").is_none());
    }
    let d2 = dict(&c.get(3, "/region/state?linearizable=true").await.unwrap()["Ok"], "pod");
    assert_eq!(d2["queue"], outside[0]);
    assert!(d2.values().all(|id| r2.contains(id)));
    // Every node writes globally again.
    c.put(1, "healed").await.unwrap();
    for i in all {
        assert!(keys(&c.state(i, true).await.unwrap()).contains("healed"));
    }
}
