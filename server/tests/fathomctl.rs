//! fathomctl against a real one-node fathom-server: the cluster forms by itself, the
//! topology, tokens, settings and node list round-trip through the admin service and
//! Raft, the metadata survives a restart, and errors say what went wrong and where.
//!
//! Every call goes over mTLS with the admin bundle the server writes into its data
//! directory; the cluster nodes talk Raft with node certificates of one CA, copied to
//! each node before its first start. The enrollment test runs a real fathom-agent.
//!
//! Needs the fathomctl and fathom-agent binaries of the same build (`cargo build -p
//! fathomctl -p fathom-agent`) and libchdb (scripts/fetch-chdb.sh), like the other
//! server tests; root for the agent test (it captures on loopback).

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{
    count_calls, fathomctl_bin, free_port, http_server, http_status, poll, require_root, serial,
    Agent, Server, TempDir,
};

struct Ctl<'a> {
    server: &'a Server,
    contexts: std::path::PathBuf,
}

impl<'a> Ctl<'a> {
    fn new(server: &'a Server, dir: &Path) -> Ctl<'a> {
        Ctl { server, contexts: dir.join("fathomctl.toml") }
    }

    /// fathomctl with no --server (contexts decide).
    fn bare(&self, args: &[&str]) -> Output {
        Command::new(fathomctl_bin())
            .args(args)
            .env("FATHOMCTL_CONFIG", &self.contexts)
            .env("FATHOMCTL_ADMIN_DIR", self.server.admin_dir())
            .env_remove("FATHOMCTL_CONTEXT")
            .env_remove("FATHOMCTL_SERVER")
            .stdin(Stdio::null())
            .output()
            .expect("run fathomctl")
    }

    fn run(&self, args: &[&str]) -> Output {
        let url = self.url();
        let mut all = vec!["--server", url.as_str()];
        all.extend_from_slice(args);
        self.bare(&all)
    }

    fn url(&self) -> String {
        self.server.control_url()
    }

    /// Success expected: standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "fathomctl {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {text}"))
    }

    /// Failure expected: standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "fathomctl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn fleet_administration_round_trips_through_a_one_node_cluster() {
    let _g = serial();
    let dir = TempDir::new("fathomctl");
    let mut server = Server::start(&dir.0, &[]);
    let ctl = Ctl::new(&server, &dir.0);

    // The one-node cluster forms with no flag: this node leads, alone.
    let status = poll("a leader", Duration::from_secs(30), || {
        let v = ctl.json(&["cluster", "status"]);
        if v["leader"] == 1 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["state"], "Leader");
    assert_eq!(status["voters"], serde_json::json!([1]));
    let yaml: Value = serde_yaml::from_str(&ctl.ok(&["cluster", "status", "-o", "yaml"])).unwrap();
    assert_eq!(yaml["leader"], 1);
    let table = ctl.ok(&["cluster", "status"]);
    assert!(table.contains("LEADER") && table.contains("Leader"), "{table}");

    // The node registers itself (placement reads the node table).
    let nodes = poll("the node registered", Duration::from_secs(30), || {
        let v = ctl.json(&["node", "list"]);
        if v[0]["registered"] == true {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    let n = &nodes[0];
    assert_eq!(
        (n["id"].as_u64(), n["live"].as_bool(), n["raft_member"].as_str()),
        (Some(1), Some(true), Some("voter"))
    );
    assert_eq!(n["api_addr"], format!("127.0.0.1:{}", server.control_port));

    // Topology: checked on the way in.
    ctl.ok(&["region", "create", "eu", "--description", "Europe"]);
    ctl.ok(&["region", "create", "us"]);
    ctl.ok(&["az", "create", "eu-1a", "--region", "eu"]);
    ctl.ok(&["az", "create", "us-1a", "--region", "us"]);
    let e = ctl.fails(&["az", "create", "eu-1a", "--region", "us"]);
    assert!(e.contains("belongs to region \"eu\""), "{e}");
    let e = ctl.fails(&["az", "create", "x1", "--region", "mars"]);
    assert!(e.contains("unknown region \"mars\""), "{e}");
    ctl.ok(&[
        "pool", "create", "web", "--region", "eu", "--az", "eu-1a", "--kind", "k8s", "--arch",
        "arm64", "--kernel", "5.4-6.8",
    ]);
    let e = ctl.fails(&["pool", "create", "db", "--region", "us", "--az", "eu-1a", "--kind", "vm"]);
    assert!(e.contains("belongs to region \"eu\""), "{e}");
    let e = ctl.fails(&[
        "pool", "create", "db", "--region", "eu", "--az", "eu-1a", "--kind", "vm", "--kernel",
        "6.8-5.4",
    ]);
    assert!(e.contains("kernel range"), "{e}");
    assert_eq!(names(&ctl.json(&["region", "list"])), ["eu", "us"]);
    assert_eq!(names(&ctl.json(&["az", "list", "--region", "us"])), ["us-1a"]);
    let pools = ctl.json(&["pool", "list"]);
    assert_eq!(names(&pools), ["web"]);
    assert_eq!(
        (pools[0]["kind"].as_str(), pools[0]["arch"].as_str()),
        (Some("k8s"), Some("aarch64"))
    );
    assert_eq!(pools[0]["kernel_range"], "5.4.0-6.8.0");
    let table = ctl.ok(&["pool", "list"]);
    assert!(table.contains("KERNEL") && table.contains("aarch64"), "{table}");

    // Pool agent config: versions grow, bad TOML is refused.
    let v = ctl.json(&["pool", "set-config", "web", "--body", "[capture]\nexclude_ports = [22]\n"]);
    assert_eq!(v["version"], 1);
    let e = ctl.fails(&["pool", "set-config", "web", "--body", "not toml ="]);
    assert!(e.contains("not valid TOML"), "{e}");
    let e = ctl.fails(&["pool", "set-config", "nope", "--body", "a = 1"]);
    assert!(e.contains("unknown pool"), "{e}");
    assert_eq!(ctl.json(&["pool", "list"])[0]["config_version"], 1);

    // Tokens: the secret is printed once, only its hash is listed; revoke by prefix.
    let t = ctl.json(&["token", "create", "--pool", "web", "--ttl", "2h"]);
    let secret = t["secret"].as_str().unwrap();
    assert!(secret.starts_with("fathom-enroll-") && secret.len() > 40, "{secret}");
    let id = t["token"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (t["token"]["region"].as_str(), t["token"]["az"].as_str()),
        (Some("eu"), Some("eu-1a"))
    );
    let list = ctl.json(&["token", "list", "--pool", "web"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        (list[0]["id"].as_str(), list[0]["state"].as_str()),
        (Some(id.as_str()), Some("valid"))
    );
    assert!(
        !ctl.ok(&["token", "list", "-o", "yaml"]).contains(secret),
        "the secret is never listed"
    );
    let e = ctl.fails(&["token", "create", "--pool", "web", "--region", "us"]);
    assert!(e.contains("not \"us\""), "{e}");
    ctl.ok(&["token", "revoke", &id[..12]]);
    assert_eq!(ctl.json(&["token", "list"])[0]["state"], "revoked");
    let e = ctl.fails(&["token", "revoke", "0000"]);
    assert!(e.contains("first 8 characters"), "{e}");

    // Settings.
    ctl.ok(&["config", "set", "placement.load_factor", "1.5"]);
    let v = ctl.json(&["config", "get", "placement.load_factor"]);
    assert_eq!((v[0]["value"].as_str(), v[0]["default"].as_bool()), (Some("1.5"), Some(false)));
    let e = ctl.fails(&["config", "set", "placement.load_factor", "0.2"]);
    assert!(e.contains("from 1 to 10"), "{e}");
    let e = ctl.fails(&["config", "set", "no.such", "1"]);
    assert!(e.contains("placement.vnodes"), "{e}");

    // Agents: none enrolled yet; filters are checked; unknown ids are named.
    assert_eq!(ctl.json(&["agent", "list", "--region", "eu"]), serde_json::json!([]));
    let e = ctl.fails(&["agent", "list", "--status", "sleepy"]);
    assert!(e.contains("unknown agent status"), "{e}");
    let e = ctl.fails(&["agent", "show", "ghost"]);
    assert!(e.contains("not found") && e.contains("ghost"), "{e}");
    let e = ctl.fails(&["node", "drain", "9"]);
    assert!(e.contains("no node 9"), "{e}");
    let e = ctl.fails(&["node", "remove", "1"]);
    assert!(e.contains("only voter"), "{e}");
    ctl.ok(&["node", "drain", "1"]);
    assert_eq!(ctl.json(&["node", "list"])[0]["drained"], true);

    // The metadata is on disk: a restarted node has it all, drain included.
    server.stop();
    server.spawn();
    let ctl = Ctl::new(&server, &dir.0);
    let regions = poll("the restarted node to answer", Duration::from_secs(30), || {
        let out = ctl.run(&["region", "list", "-o", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice::<Value>(&out.stdout).map_err(|e| e.to_string())
    });
    assert_eq!(names(&regions), ["eu", "us"]);
    let nodes = poll("the node re-registered", Duration::from_secs(30), || {
        let v = ctl.json(&["node", "list"]);
        if v[0]["live"] == true {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(nodes[0]["drained"], true, "a drain outlives a restart");
    ctl.ok(&["node", "drain", "1", "--undo"]);
    assert_eq!(ctl.json(&["node", "list"])[0]["drained"], false);
}

#[test]
fn contexts_choose_the_cluster_and_errors_name_the_address() {
    let _g = serial();
    let dir = TempDir::new("fathomctl-contexts");
    let server = Server::start(&dir.0, &[]);
    let ctl = Ctl::new(&server, &dir.0);
    let dead = format!("127.0.0.1:{}", free_port());

    // No context, no --server: the default address, and the error says so.
    let out = ctl.bare(&["--server", &dead, "region", "list"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(&format!("cannot connect to https://{dead}")) && e.contains("refused"),
        "{e}"
    );

    // Two contexts; `use` switches; --context overrides; FATHOMCTL_CONTEXT too.
    let good = ctl.url();
    let q = server.query_url();
    assert!(ctl.bare(&["context", "set", "dead", "--server", &dead]).status.success());
    assert!(ctl
        .bare(&["context", "set", "live", "--server", &good, "--query-url", &q])
        .status
        .success());
    let out = ctl.bare(&["region", "list"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("context \"dead\""),
        "first context set is current: {e}"
    );
    assert!(ctl.bare(&["context", "use", "live"]).status.success());
    let out = ctl.bare(&["cluster", "status", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["node_id"], 1);
    let out = ctl.bare(&["--context", "dead", "node", "list"]);
    assert!(!out.status.success());
    let listed = ctl.bare(&["context", "list", "-o", "json"]);
    let v: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let current: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["current"] == "*")
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(current, ["live"]);
    let out = ctl.bare(&["--context", "nope", "node", "list"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("no context \"nope\"") && e.contains("dead, live"),
        "{e}"
    );

    // query goes to the context's query URL.
    let out = ctl.bare(&["query", "SELECT 1 FROM l7_flow_log LIMIT 1", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A port that is not a control port: said plainly.
    let out = ctl.bare(&["--server", &q, "region", "list"]);
    assert!(!out.status.success());

    // A context naming the admin bundle explicitly (no FATHOMCTL_ADMIN_DIR to fall back on).
    let admin = server.admin_dir();
    let path = |f: &str| admin.join(f).to_string_lossy().into_owned();
    let (ca, cert, key) = (path("ca.pem"), path("admin.pem"), path("admin.key"));
    let plain = format!("127.0.0.1:{}", server.control_port);
    let set = ctl.bare(&[
        "context", "set", "tls", "--server", &plain, "--ca", &ca, "--cert", &cert, "--key", &key,
    ]);
    assert!(set.status.success());
    let no_default = |args: &[&str]| {
        Command::new(fathomctl_bin())
            .args(args)
            .env("FATHOMCTL_CONFIG", &ctl.contexts)
            .env("FATHOMCTL_ADMIN_DIR", dir.join("no-such-dir"))
            .env_remove("FATHOMCTL_CONTEXT")
            .env_remove("FATHOMCTL_SERVER")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = no_default(&["--context", "tls", "cluster", "status", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Only the CA: the server is trusted, but admin calls need an admin certificate.
    assert!(ctl
        .bare(&["context", "set", "ca-only", "--server", &plain, "--ca", &ca])
        .status
        .success());
    let out = no_default(&["--context", "ca-only", "region", "list"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("client certificate"), "{e}");
    // No CA at all: said, and nothing is sent.
    assert!(ctl.bare(&["context", "set", "bare", "--server", &plain]).status.success());
    let out = no_default(&["--context", "bare", "region", "list"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("no cluster CA"), "{e}");
    // Plain http:// is refused: the control port speaks only TLS.
    let out = ctl.bare(&["--server", &format!("http://{plain}"), "region", "list"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("only TLS"), "{e}");

    // Completion scripts.
    for shell in ["bash", "zsh", "fish"] {
        let out = ctl.bare(&["completion", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("fathomctl") && text.contains("token"), "{shell}");
    }
}

/// `cluster status -o json` of one node, if it answers.
fn status_of(ctl: &Ctl) -> Result<Value, String> {
    let out = ctl.run(&["cluster", "status", "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Every listed node reports the same leader (not `except`) and the same voters.
fn agreed_leader(ctls: &[&Ctl], voters: &[u64], except: u64) -> Result<u64, String> {
    let mut leaders = Vec::new();
    for c in ctls {
        let v = status_of(c)?;
        let got: Vec<u64> =
            v["voters"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        if got != voters {
            return Err(format!("node {} sees voters {got:?}", v["node_id"]));
        }
        leaders.push(v["leader"].as_u64().unwrap_or(0));
    }
    match leaders.first() {
        Some(&l) if l != 0 && l != except && leaders.iter().all(|x| *x == l) => Ok(l),
        _ => Err(format!("leaders {leaders:?}")),
    }
}

#[test]
fn three_servers_form_a_cluster_that_every_node_reports_alike() {
    let _g = serial();
    let dir = TempDir::new("fathomctl-three");
    let env = |id: &str, seeds: &str, expect: &str| {
        vec![
            ("FATHOM_SERVER_CLUSTER__NODE_ID".to_string(), id.to_string()),
            ("FATHOM_SERVER_CLUSTER__BOOTSTRAP_EXPECT".to_string(), expect.to_string()),
            ("FATHOM_SERVER_CLUSTER__REGION_BOOTSTRAP_EXPECT".to_string(), expect.to_string()),
            ("FATHOM_SERVER_CLUSTER__SEEDS".to_string(), seeds.to_string()),
        ]
    };
    let start_with = |id: &str, seeds: &str, expect: &str| {
        let e = env(id, seeds, expect);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Server::start(&dir.join(&format!("n{id}")), &e)
    };
    let start = |id: &str, seeds: &str| start_with(id, seeds, "3");
    let s1 = start("1", "[]");
    // The other nodes get node 1's CA directory before their first start.
    for n in ["n2", "n3", "n4"] {
        s1.copy_ca_to(&dir.join(n));
    }
    let seed = format!("[\"127.0.0.1:{}\"]", s1.gossip_port);
    let s2 = start("2", &seed);
    let s3 = start("3", &seed);
    let mut servers = vec![s1, s2, s3];
    let ctls: Vec<Ctl> = servers.iter().map(|s| Ctl::new(s, &dir.0)).collect();
    let all: Vec<&Ctl> = ctls.iter().collect();
    poll("three nodes agreeing on a leader", Duration::from_secs(60), || {
        agreed_leader(&all, &[1, 2, 3], 0)
    });
    drop(ctls);

    // A fourth node, started once the cluster exists and never forming one of its own
    // (bootstrap_expect 0): it joins by `node add`.
    let s4 = start_with("4", &seed, "0");
    let raft4 = format!("127.0.0.1:{}", s4.raft_port);
    servers.push(s4);
    let ctls: Vec<Ctl> = servers.iter().map(|s| Ctl::new(s, &dir.0)).collect();
    let all: Vec<&Ctl> = ctls[..3].iter().collect();
    // Not a member yet: no leader to load the CA from, so its control port stays shut
    // (it opens once the node joined).
    assert!(status_of(&ctls[3]).is_err());
    // Every node lists all three as live, registered voters, and the fourth as live
    // through gossip but not (yet) a member.
    for c in &all {
        poll("every node listing three live voters", Duration::from_secs(60), || {
            let v = c.json(&["node", "list"]);
            let ns = v.as_array().cloned().unwrap_or_default();
            let voters_ok = ns.iter().filter(|n| n["id"].as_u64() <= Some(3)).all(|n| {
                n["live"] == true && n["registered"] == true && n["raft_member"] == "voter"
            });
            let fourth_ok = ns.iter().any(|n| {
                n["id"] == 4
                    && n["live"] == true
                    && n["raft_member"] == ""
                    && n["registered"] == false
            });
            if ns.len() == 4 && voters_ok && fourth_ok {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
    }

    // The fourth node joins as a voter through any node; all four agree.
    // (Retried while the formation's own membership change is still committing.)
    poll("node 4 added", Duration::from_secs(60), || {
        let out = ctls[2].run(&["node", "add", "4", "--raft-addr", &raft4]);
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.success() {
            true => Ok(()),
            false if e.contains("undergoing a configuration change") => Err(e),
            false => panic!("node add: {e}"),
        }
    });
    let all: Vec<&Ctl> = ctls.iter().collect();
    let leader = poll("four nodes agreeing", Duration::from_secs(60), || {
        agreed_leader(&all, &[1, 2, 3, 4], 0)
    });

    // A write through a follower is forwarded to the leader and read on the others.
    let follower = (0..3).find(|&i| i as u64 + 1 != leader).unwrap();
    ctls[follower].ok(&["region", "create", "eu"]);
    for c in &all {
        assert_eq!(names(&c.json(&["region", "list"])), ["eu"]);
    }

    // The leader dies: the other two elect a new one and still agree.
    let li = leader as usize - 1;
    drop(ctls);
    servers[li].kill9();
    let ctls: Vec<Ctl> = servers.iter().map(|s| Ctl::new(s, &dir.0)).collect();
    let rest: Vec<&Ctl> =
        ctls.iter().enumerate().filter(|(i, _)| *i != li).map(|(_, c)| c).collect();
    let new_leader = poll("a new leader after the old one died", Duration::from_secs(60), || {
        agreed_leader(&rest, &[1, 2, 3, 4], leader)
    });
    assert_ne!(new_leader, leader);
    rest[0].ok(&["region", "create", "us"]);
    for c in &rest {
        assert_eq!(names(&c.json(&["region", "list"])), ["eu", "us"]);
    }
    // Gossip marks the dead node; the table says so on both survivors.
    for c in &rest {
        poll("the dead node shown as not live", Duration::from_secs(60), || {
            let v = c.json(&["node", "list"]);
            let dead = v.as_array().into_iter().flatten().find(|n| n["id"] == leader);
            match dead {
                Some(n) if n["live"] == false => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
    // The dead node is removed: out of Raft and the node table, everywhere.
    rest[1].ok(&["node", "remove", &leader.to_string()]);
    let voters: Vec<u64> = (1..=4).filter(|n| *n != leader).collect();
    poll("three voters after the removal", Duration::from_secs(60), || {
        agreed_leader(&rest, &voters, leader)
    });
    for c in &rest {
        poll("the removed node gone from the node list", Duration::from_secs(60), || {
            let v = c.json(&["node", "list"]);
            let ids: Vec<u64> =
                v.as_array().into_iter().flatten().filter_map(|n| n["id"].as_u64()).collect();
            if ids == voters {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        });
    }
}

/// The agent's counter `name` (fathom_agent_sender_<name>) from its /metrics.
fn sender_counter(agent: &Agent, name: &str) -> u64 {
    let page = agent.metrics();
    let key = format!("fathom_agent_sender_{name} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Creates region eu, AZ eu-1a and VM pool web there, and an enrollment
/// token for the pool; returns its secret.
fn web_pool_token(ctl: &Ctl) -> String {
    ctl.ok(&["region", "create", "eu"]);
    ctl.ok(&["az", "create", "eu-1a", "--region", "eu"]);
    ctl.ok(&["pool", "create", "web", "--region", "eu", "--az", "eu-1a", "--kind", "vm"]);
    let t = ctl.json(&["token", "create", "--pool", "web", "--ttl", "1h"]);
    t["secret"].as_str().unwrap().to_string()
}

#[test]
fn an_agent_enrolls_with_a_token_pushes_over_mtls_and_is_refused_once_revoked() {
    require_root();
    let _g = serial();
    let dir = TempDir::new("fathomctl-enroll");
    let server = Server::start(&dir.join("server-data"), &[]);
    let ctl = Ctl::new(&server, &dir.0);
    let secret = web_pool_token(&ctl);

    // A real fathom-agent enrolls with the token and pushes over mTLS.
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent = Agent::start(
        &agent_dir,
        &server,
        "web-1",
        &[("FATHOM_AGENT_SENDER__ENROLL_TOKEN", &secret)],
    );
    let active = poll("the agent listed as active", Duration::from_secs(60), || {
        let v = ctl.json(&["agent", "list", "--status", "active"]);
        match v.as_array().and_then(|a| a.iter().find(|a| a["id"] == "web-1")) {
            Some(a) => Ok(a.clone()),
            None => Err(v.to_string()),
        }
    });
    assert_eq!((active["pool"].as_str(), active["region"].as_str()), (Some("web"), Some("eu")));
    assert_eq!(ctl.json(&["token", "list"])[0]["state"], "used");
    let (_app, port) = http_server(&dir.0);
    assert_eq!(http_status(port, "/before-revoke").unwrap(), 404);
    poll("the call stored through the mTLS data channel", Duration::from_secs(60), || {
        match count_calls(&server, port)? {
            (n, _) if n >= 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // The same token again, for a second agent: refused, and that agent never runs.
    let second = Command::new(support::agent_bin())
        .args(["run", "-i", "lo"])
        .env("FATHOM_AGENT_OUTPUT__FORMAT", "server")
        .env("FATHOM_AGENT_SENDER__SERVER", server.ingest_addr())
        .env("FATHOM_AGENT_SENDER__AGENT_ID", "web-2")
        .env("FATHOM_AGENT_SENDER__SPOOL_DIR", dir.join("second-spool"))
        .env("FATHOM_AGENT_SENDER__ENROLL_TOKEN", &secret)
        .env("FATHOM_AGENT_SENDER__CONTROL_ADDR", format!("127.0.0.1:{}", server.control_port))
        .env("FATHOM_AGENT_SENDER__CA_FILE", server.admin_dir().join("ca.pem"))
        .env("FATHOM_AGENT_SENDER__CERT_DIR", dir.join("second-certs"))
        .env("FATHOM_AGENT_CAPTURE__EBPF", "off")
        .env("FATHOM_AGENT_HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && e.contains("refused"), "{e}");
    assert!(!dir.join("second-certs/enrollment.json").exists());
    assert!(ctl.json(&["agent", "list"]).as_array().unwrap().iter().all(|a| a["id"] != "web-2"));

    // Revoked: the agent and its certificates; its pushes are refused from now on and
    // what it captures stays in its spool.
    ctl.ok(&["agent", "revoke", "web-1"]);
    assert_eq!(ctl.json(&["agent", "show", "web-1"])["status"], "revoked");
    let errors = sender_counter(&agent, "send_errors_total");
    assert_eq!(http_status(port, "/after-revoke").unwrap(), 404);
    poll("pushes refused and spooled", Duration::from_secs(60), || {
        let now = sender_counter(&agent, "send_errors_total");
        if now > errors && agent.spooled() > 0 {
            Ok(())
        } else {
            Err(format!("send errors {errors} -> {now}, spooled {}", agent.spooled()))
        }
    });
    let v = support::fathomctl(
        &server,
        "flow_log",
        &format!(
            "SELECT Count(*) AS n FROM l7_flow_log WHERE server_port = {port} \
             AND request_resource = '/after-revoke'"
        ),
    )
    .unwrap();
    assert_eq!(support::int(&support::rows(&v)[0]["n"]), 0, "{v}");
}

/// The agent's gauge `name` (fathom_agent_sender_<name>) from /metrics on `port`.
fn gauge_on(port: u16, name: &str) -> Result<u64, String> {
    let page = support::http_get(port, "/metrics").ok_or(format!("no /metrics on {port}"))?;
    let key = format!("fathom_agent_sender_{name} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or(format!("no {name} on {port}"))
}

#[test]
fn a_pushed_pool_config_restarts_the_agent_with_it_and_an_invalid_one_is_not_reported() {
    require_root();
    let _g = serial();
    let dir = TempDir::new("fathomctl-pool-config");
    let server = Server::start(
        &dir.join("server-data"),
        &[("FATHOM_SERVER_CONTROLLER__HEARTBEAT_INTERVAL_SECS", "1")],
    );
    let ctl = Ctl::new(&server, &dir.0);
    let secret = web_pool_token(&ctl);

    // The metrics listener comes from the config file, so the pool config can move it.
    let (file_port, pool_port) = (free_port(), free_port());
    let config = dir.join("agent.toml");
    std::fs::write(&config, format!("[http]\nlisten = \"127.0.0.1:{file_port}\"\n")).unwrap();
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut agent = Command::new(support::agent_bin())
        .args(["run", "-i", "lo", "--config"])
        .arg(&config)
        .env("FATHOM_AGENT_OUTPUT__FORMAT", "server")
        .env("FATHOM_AGENT_SENDER__AGENT_ID", "web-1")
        .env("FATHOM_AGENT_SENDER__SPOOL_DIR", dir.join("spool"))
        .env("FATHOM_AGENT_SENDER__ENROLL_TOKEN", &secret)
        .env("FATHOM_AGENT_SENDER__CONTROL_ADDR", format!("127.0.0.1:{}", server.control_port))
        .env("FATHOM_AGENT_SENDER__CA_FILE", server.admin_dir().join("ca.pem"))
        .env("FATHOM_AGENT_SENDER__CERT_DIR", dir.join("certs"))
        .env(
            "FATHOM_AGENT_CAPTURE__EXCLUDE_PORTS",
            format!("[{}, {}]", server.ingest_port, server.control_port),
        )
        .env("FATHOM_AGENT_CAPTURE__EBPF", "off")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let pid = agent.id();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let reported = |want: u64| {
        let v = ctl.json(&["agent", "show", "web-1"]);
        if v["config_version"] == want {
            Ok(())
        } else {
            Err(v.to_string())
        }
    };
    let long = Duration::from_secs(60);
    poll("the agent on the file's port, with no pool config", long, || {
        gauge_on(file_port, "pool_config_version").and_then(|v| match v {
            0 => Ok(()),
            v => Err(format!("version {v}")),
        })
    });
    poll("the agent active", long, || reported(0));

    // A valid pool config: the agent restarts in place (same process) and runs with it.
    let v = ctl.json(&[
        "pool",
        "set-config",
        "web",
        "--body",
        &format!("[http]\nlisten = \"127.0.0.1:{pool_port}\"\n"),
    ]);
    assert_eq!(v["version"], 1);
    poll("the agent on the pool's port, running version 1", long, || {
        match gauge_on(pool_port, "pool_config_version")? {
            1 => Ok(()),
            v => Err(format!("version {v}")),
        }
    });
    assert!(agent.try_wait().unwrap().is_none(), "{}", log_text());
    assert_eq!(agent.id(), pid);
    assert!(support::http_get(file_port, "/metrics").is_none(), "the file's port is closed");
    poll("version 1 reported to the controller", long, || reported(1));
    assert!(log_text().contains("restarting to apply"), "{}", log_text());

    // An invalid one (an unknown key; valid TOML, so the controller takes it): refused
    // by the agent, which keeps running and reporting version 1.
    let v = ctl.json(&["pool", "set-config", "web", "--body", "[flow]\nmax_flowz = 1\n"]);
    assert_eq!(v["version"], 2);
    poll("the agent to refuse version 2", long, || {
        let text = log_text();
        match text
            .lines()
            .find(|l| l.contains("pushed pool config refused") && l.contains("version=2"))
        {
            Some(l) if l.contains("max_flowz") => Ok(()),
            _ => Err(text.lines().rev().take(5).collect::<Vec<_>>().join("\n")),
        }
    });
    // Beats after the refusal still report the running version.
    let beats = log_text().matches("pushed pool config refused").count();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        log_text().matches("pushed pool config refused").count(),
        beats,
        "refused once, not every beat"
    );
    reported(1).unwrap();
    assert_eq!(gauge_on(pool_port, "pool_config_version"), Ok(1));
    assert!(agent.try_wait().unwrap().is_none(), "{}", log_text());

    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let st = agent.wait().unwrap();
    assert!(st.success(), "{st}: {}", log_text());
}
