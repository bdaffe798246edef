//! Metadata sharded by region, with real processes: three `fathom-server` nodes in
//! three regions, each in its own network namespace on its region's bridge. Region 1 is
//! cut off (its bridge's link to the others dropped); inside it a real `fathom-agent`
//! enrolls with a token made there (certificate issued, token consumed) while the other
//! two regions keep committing global writes. After healing, everything is visible.
//! Needs root and iproute2.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{agent_bin, ctl_output, fathomctl_bin, poll, require_root, serial, TempDir, SERVER};

const K: u8 = 31;
const LONG: Duration = Duration::from_secs(120);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One namespace per node, one bridge per region, the region bridges joined to a core
/// bridge by one veth each (`r<N>up`): setting it down cuts the region off.
struct Net {
    nodes: usize,
}

impl Net {
    fn ns(i: usize) -> String {
        format!("frg-{K}-n{i}")
    }
    fn br() -> String {
        format!("frg-{K}-br")
    }
    fn addr(i: usize) -> String {
        format!("10.215.{K}.{i}")
    }

    fn create(nodes: usize) -> Net {
        let n = Net { nodes };
        n.destroy();
        let br = Net::br();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "add", "core", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "core", "up"]);
        for i in 1..=nodes {
            // Node i is alone in region i.
            let (rb, up, dn) = (format!("br{i}"), format!("r{i}up"), format!("r{i}dn"));
            ip(&["-n", &br, "link", "add", &rb, "type", "bridge"]);
            ip(&["-n", &br, "link", "set", &rb, "up"]);
            ip(&["-n", &br, "link", "add", &up, "type", "veth", "peer", "name", &dn]);
            ip(&["-n", &br, "link", "set", &up, "master", "core", "up"]);
            ip(&["-n", &br, "link", "set", &dn, "master", &rb, "up"]);
            let ns = Net::ns(i);
            let v = format!("frg{K}n{i}");
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &v, "netns", &br, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &br, "link", "set", &v, "master", &rb, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", Net::addr(i)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        n
    }

    fn set_region_link(&self, r: usize, up: bool) {
        let v = format!("r{r}up");
        ip(&["-n", &Net::br(), "link", "set", &v, if up { "up" } else { "down" }]);
    }

    fn destroy(&self) {
        for i in 1..=self.nodes.max(3) {
            let _ = Command::new("ip").args(["netns", "del", &Net::ns(i)]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &Net::br()]).output();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// A `fathom-server` in node `i`'s namespace, in region `reg<i>`.
struct Node {
    i: usize,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(i: usize, dir: &Path, seeds: &str) -> Node {
        let dir = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let a = Net::addr(i);
        let child = Command::new("ip")
            .args(["netns", "exec", &Net::ns(i), SERVER, "run"])
            .env("RUST_BACKTRACE", "0")
            .env("FATHOM_SERVER_CLUSTER__NODE_ID", i.to_string())
            .env("FATHOM_SERVER_CLUSTER__REGION", format!("reg{i}"))
            .env("FATHOM_SERVER_CLUSTER__AZ", format!("reg{i}-a"))
            .env("FATHOM_SERVER_CLUSTER__BOOTSTRAP_EXPECT", "3")
            .env("FATHOM_SERVER_CLUSTER__REGION_BOOTSTRAP_EXPECT", "1")
            .env("FATHOM_SERVER_CLUSTER__SEEDS", seeds)
            .env("FATHOM_SERVER_CLUSTER__RAFT_LISTEN", format!("{a}:20040"))
            .env("FATHOM_SERVER_CLUSTER__REGION_RAFT_LISTEN", format!("{a}:20042"))
            .env("FATHOM_SERVER_CLUSTER__GOSSIP_LISTEN", format!("{a}:20041"))
            .env("FATHOM_SERVER_CONTROLLER__LISTEN", format!("{a}:20035"))
            .env("FATHOM_SERVER_INGEST__LISTEN", format!("{a}:20033"))
            .env("FATHOM_SERVER_QUERY__LISTEN", format!("{a}:20416"))
            .env("FATHOM_SERVER_INGEST__DATA_DIR", dir.join("server"))
            .env("FATHOM_SERVER_STORE__DATA_DIR", dir.join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn fathom-server");
        Node { i, dir, child: Some(child) }
    }

    fn ca_dir(&self) -> PathBuf {
        self.dir.join("server/ca")
    }

    fn admin_dir(&self) -> PathBuf {
        self.dir.join("server/admin")
    }

    /// fathomctl run inside this node's namespace against its control port.
    fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &Net::ns(self.i)])
            .arg(fathomctl_bin())
            .args(["--server", &format!("https://{}:20035", Net::addr(self.i))])
            .args(args);
        ctl_output(&mut cmd, &self.dir, &self.admin_dir())
    }

    fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ctl(&all);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{args:?}: no JSON: {e}"))
    }

    fn ok(&self, args: &[&str]) -> Result<(), String> {
        let out = self.ctl(args);
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- node {} log tail ---\n{}", self.i, self.log_tail());
        }
    }
}

/// A real agent in node `i`'s namespace, enrolling there with `token`.
struct Agent(Child);

impl Agent {
    fn start(node: &Node, dir: &Path, token: &str) -> Agent {
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let a = Net::addr(node.i);
        let child = Command::new("ip")
            .args(["netns", "exec", &Net::ns(node.i)])
            .arg(agent_bin())
            .args(["run", "-i", "lo"])
            .env("RUST_BACKTRACE", "0")
            .env("FATHOM_AGENT_OUTPUT__FORMAT", "server")
            .env("FATHOM_AGENT_SENDER__SERVER", format!("{a}:20033"))
            .env("FATHOM_AGENT_SENDER__CONTROL_ADDR", format!("{a}:20035"))
            .env("FATHOM_AGENT_SENDER__CA_FILE", node.admin_dir().join("ca.pem"))
            .env("FATHOM_AGENT_SENDER__CERT_DIR", dir.join("certs"))
            .env("FATHOM_AGENT_SENDER__ENROLL_TOKEN", token)
            .env("FATHOM_AGENT_SENDER__SPOOL_DIR", dir.join("spool"))
            .env("FATHOM_AGENT_SENDER__AGENT_ID", "edge-1")
            .env("FATHOM_AGENT_CAPTURE__EBPF", "off")
            .env("FATHOM_AGENT_CAPTURE__AFPACKET", "true")
            .env("FATHOM_AGENT_HTTP__LISTEN", "127.0.0.1:38087")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn fathom-agent");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|x| x[key].as_str().map(str::to_string)).collect()
}

#[test]
fn a_region_cut_off_keeps_enrolling_agents_while_the_others_commit_global_writes() {
    require_root();
    let _g = serial();
    let tmp = TempDir::new("regions");
    let net = Net::create(3);
    let seeds = format!("[\"{}:20041\", \"{}:20041\"]", Net::addr(1), Net::addr(2));
    // Node 1 makes the cluster CA; the others get a copy before their first start.
    let n1 = Node::start(1, &tmp.0, &seeds);
    poll("node 1's CA", LONG, || {
        n1.ca_dir().join("ca.key").exists().then_some(()).ok_or_else(|| n1.log_tail())
    });
    for i in [2, 3] {
        let to = tmp.join(&format!("n{i}/server/ca"));
        std::fs::create_dir_all(&to).unwrap();
        for f in ["ca.pem", "ca.key"] {
            std::fs::copy(n1.ca_dir().join(f), to.join(f)).unwrap();
        }
    }
    let n2 = Node::start(2, &tmp.0, &seeds);
    let n3 = Node::start(3, &tmp.0, &seeds);
    let nodes = [&n1, &n2, &n3];
    for n in nodes {
        poll("every node's admin service", LONG, || {
            let v = n.json(&["cluster", "status"])?;
            let voters = v["voters"].as_array().map(|a| a.len()).unwrap_or(0);
            (voters == 3 && v["leader"].as_u64().unwrap_or(0) != 0)
                .then_some(())
                .ok_or(v.to_string())
        });
    }
    // Topology (global writes) while everything is connected.
    for r in ["reg1", "reg2"] {
        n2.ok(&["region", "create", r]).unwrap();
        n2.ok(&["az", "create", &format!("{r}-a"), "--region", r]).unwrap();
        let pool = format!("{r}-vms");
        n2.ok(&["pool", "create", &pool, "--region", r, "--az", &format!("{r}-a"), "--kind", "vm"])
            .unwrap();
    }
    poll("node 1 to see region 1's pool", LONG, || {
        let v = n1.json(&["pool", "list"])?;
        names(&v, "name").contains(&"reg1-vms".to_string()).then_some(()).ok_or(v.to_string())
    });

    // Every node recorded in the global group: the others know region 1 has nodes (and
    // so a group) of its own even if its number is not yet assigned when it is cut off.
    poll("every node recorded", LONG, || {
        let v = n2.json(&["node", "list"])?;
        let recorded =
            v.as_array().map_or(0, |a| a.iter().filter(|n| n["registered"] == true).count());
        (recorded == 3).then_some(()).ok_or(v.to_string())
    });

    // Cut region 1 (node 1) off.
    net.set_region_link(1, false);
    // The other two regions commit global writes.
    poll("a global write on the connected side", LONG, || n2.ok(&["region", "create", "reg3"]));
    n3.ok(&["az", "create", "reg3-a", "--region", "reg3"]).unwrap();
    // Region 1 cannot: it has no global majority.
    assert!(n1.ok(&["region", "create", "cut-off"]).is_err());

    // Inside region 1: a token made there, and a real agent enrolling with it.
    let token = n1.json(&["token", "create", "--pool", "reg1-vms"]).unwrap();
    let secret = token["secret"].as_str().expect("a secret").to_string();
    let token_id = token["token"]["id"].as_str().expect("a token id").to_string();
    let adir = tmp.join("agent");
    std::fs::create_dir_all(&adir).unwrap();
    let _agent = Agent::start(&n1, &adir, &secret);
    let enrollment = poll("the agent to enroll in the cut-off region", LONG, || {
        std::fs::read_to_string(adir.join("certs/enrollment.json")).map_err(|e| {
            let log = std::fs::read_to_string(adir.join("agent.log")).unwrap_or_default();
            format!("{e}: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
        })
    });
    let enrollment: Value = serde_json::from_str(&enrollment).unwrap();
    assert_eq!(enrollment["region"], "reg1", "{enrollment}");
    assert_eq!(enrollment["pool"], "reg1-vms", "{enrollment}");
    let agents = n1.json(&["agent", "list"]).unwrap();
    let edge: Vec<&Value> =
        agents.as_array().unwrap().iter().filter(|a| a["id"] == "edge-1").collect();
    assert_eq!(edge.len(), 1, "{agents}");
    assert_eq!(edge[0]["region"], "reg1");
    assert_eq!(edge[0]["pool"], "reg1-vms");
    assert!(
        !edge[0]["cert_serial"].as_str().unwrap_or("").is_empty(),
        "certificate recorded: {agents}"
    );
    let tokens = n1.json(&["token", "list"]).unwrap();
    let used: Vec<&Value> =
        tokens.as_array().unwrap().iter().filter(|t| t["id"] == token_id.as_str()).collect();
    assert_eq!(used.len(), 1, "{tokens}");
    assert_eq!(used[0]["used_by"], "edge-1", "{tokens}");
    // The agent's heartbeats are recorded (region group writes, still cut off), and the
    // region group's leader places it on its region's ingest node.
    poll("the agent active and placed in its region", LONG, || {
        let v = n1.json(&["agent", "show", "edge-1"])?;
        (v["status"] == "active" && v["ingest_node"] == 1).then_some(()).ok_or(v.to_string())
    });
    // The node list counts it on node 1 (agents live in the region group, not the global one).
    let nodes = n1.json(&["node", "list"]).unwrap();
    let node1: Vec<&Value> = nodes.as_array().unwrap().iter().filter(|n| n["id"] == 1).collect();
    assert_eq!(node1.len(), 1, "{nodes}");
    assert_eq!(node1[0]["agents"], 1, "{nodes}");

    // Admin reads span regions: a region out of reach is named, not silently left out.
    let out = n2.ctl(&["agent", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("regions not reachable (agents not listed): reg1"), "{stderr}");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!names(&listed, "id").contains(&"edge-1".to_string()), "{listed}");
    let out = n1.ctl(&["token", "list", "-o", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("regions not reachable (tokens not listed): reg2, reg3"), "{stderr}");

    // Heal: region 1 sees the global writes made meanwhile, and keeps its agent.
    net.set_region_link(1, true);
    poll("node 1 to see region 3", LONG, || {
        let v = n1.json(&["region", "list"])?;
        let r = names(&v, "name");
        (r.contains(&"reg3".to_string()) && !r.contains(&"cut-off".to_string()))
            .then_some(())
            .ok_or(v.to_string())
    });
    n1.ok(&["region", "create", "healed"]).unwrap();
    let v = n3.json(&["region", "list"]).unwrap();
    assert!(names(&v, "name").contains(&"healed".to_string()), "{v}");
    let v = n1.json(&["agent", "show", "edge-1"]).unwrap();
    assert_eq!(v["region"], "reg1");
    // Other regions' nodes list it again, read from region 1's group.
    for n in [&n2, &n3] {
        let v = poll("the agent listed from another region", LONG, || {
            let out = n.ctl(&["agent", "list", "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (stderr.is_empty() && names(&v, "id").contains(&"edge-1".to_string()))
                .then_some(v.clone())
                .ok_or(format!("{v} {stderr}"))
        });
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        let a = n.json(&["agent", "show", "edge-1"]).unwrap();
        assert_eq!(a["pool"], "reg1-vms");
        let st = n.json(&["cluster", "status"]).unwrap();
        assert_eq!(st["agents"], 1, "{st}");
    }
}
