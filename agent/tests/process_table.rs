//! The process table against the real /proc, and cgroup parsing on
//! real-looking lines.

use std::fs;
use std::process::Command;

use fathom_agent::process::{cgroup_path, container_id, pod_uid, ProcessTable};

/// Unix seconds of a `ps -o lstart=` line printed with TZ=UTC, e.g.
/// "Sun Nov 29 23:58:53 2026".
fn parse_lstart(s: &str) -> u64 {
    let f: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(f.len(), 5, "lstart {s:?}");
    let months =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = months.iter().position(|&x| x == f[1]).unwrap() as i64 + 1;
    let d: i64 = f[2].parse().unwrap();
    let y: i64 = f[4].parse().unwrap();
    let hms: Vec<i64> = f[3].split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (proleptic Gregorian), 1970-01-01 = 0.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]) as u64
}

fn ps(pid: u32, field: &str) -> String {
    let out = Command::new("ps")
        .args(["-o", &format!("{field}="), "-p", &pid.to_string()])
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .expect("ps (procps) is needed for this test");
    assert!(out.status.success(), "ps -p {pid} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn lstart_parser() {
    assert_eq!(parse_lstart("Thu Jan  1 00:00:00 1970"), 0);
    assert_eq!(parse_lstart("Sun Nov 29 23:58:53 2026"), 1_795_996_733);
    assert_eq!(parse_lstart("Tue Feb 29 12:00:00 2000"), 951_825_600);
}

#[test]
fn finds_itself() {
    let me = std::process::id();
    let mut t = ProcessTable::new();
    t.scan().unwrap();
    let p = t.get(me).expect("own pid in the table").clone();
    assert!(t.get(1).is_some(), "pid 1");
    assert_eq!(p.pid, me);
    assert_eq!(p.ppid, std::os::unix::process::parent_id());
    assert_eq!(p.name, ps(me, "comm"));
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(p.cmdline, args.join(" "));
    let lstart = parse_lstart(&ps(me, "lstart"));
    let ours = p.start_time_us / 1_000_000;
    assert!(ours.abs_diff(lstart) <= 1, "start {ours} vs ps {lstart}");
    // The cgroup is this process's, and a container id, if any, comes from it.
    let file = fs::read_to_string("/proc/self/cgroup").unwrap();
    assert_eq!(p.cgroup, cgroup_path(&file));
    assert!(p.cgroup.starts_with('/'), "{:?}", p.cgroup);
    assert_eq!(p.container_id.as_deref(), container_id(&p.cgroup));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["pid"], me);
    assert_eq!(json["name"], p.name.as_str());
}

#[test]
fn child_appears_and_disappears() {
    let mut t = ProcessTable::new();
    t.scan().unwrap();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    // Right after fork the child may not have exec'd yet, and mid-exec the
    // kernel sets the new comm before the new argv is readable: wait for
    // both (the exec tracepoint that drives on_exec fires after them).
    let mut info = None;
    for _ in 0..200 {
        info = t.on_exec(pid).cloned();
        if info.as_ref().is_some_and(|i| i.name == "sleep" && !i.cmdline.is_empty()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let info = info.expect("child read");
    assert_eq!(info.name, "sleep");
    assert_eq!(info.cmdline, "sleep 30");
    assert_eq!(info.ppid, std::process::id());
    let me = t.get(std::process::id()).unwrap().clone();
    assert!(info.start_time_us >= me.start_time_us);
    assert_eq!(info.cgroup, me.cgroup);

    // A rescan finds it too.
    let mut t2 = ProcessTable::new();
    t2.scan().unwrap();
    assert_eq!(t2.get(pid).map(|p| p.cmdline.as_str()), Some("sleep 30"));

    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(t.on_exit(pid).map(|p| p.pid), Some(pid));
    assert!(t.get(pid).is_none());
    assert!(t.on_exec(pid).is_none(), "a reaped pid cannot be read");
    t2.scan().unwrap();
    assert!(t2.get(pid).is_none(), "rescan drops exited processes");
}

#[test]
fn bounded() {
    let mut t = ProcessTable::with_root("/proc", 3);
    t.scan().unwrap();
    assert_eq!(t.len(), 3);
    assert!(t.stats().dropped > 0);
    assert_eq!(t.stats().scans, 1);
}

#[test]
fn fake_root_start_time_math() {
    let root = std::env::temp_dir().join(format!("fathom-proc-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("4242")).unwrap();
    fs::create_dir_all(root.join("self")).unwrap();
    fs::write(root.join("stat"), "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n").unwrap();
    let d = root.join("4242");
    fs::write(
        d.join("stat"),
        "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0\n",
    )
    .unwrap();
    fs::write(d.join("comm"), "my (odd) app\n").unwrap();
    fs::write(d.join("cmdline"), b"/usr/bin/app\0--flag\0x y\0").unwrap();
    fs::write(
        d.join("cgroup"),
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c5a4c1e_3d3b_4b6e_9c55_2f1f2e8b7c3d.slice/cri-containerd-4f6b3c1e8a2d9f0b7c6e5d4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c.scope\n",
    )
    .unwrap();
    let mut t = ProcessTable::with_root(&root, 100);
    t.scan().unwrap();
    assert_eq!(t.len(), 1);
    let p = t.get(4242).unwrap();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert_eq!(p.start_time_us, 1_700_000_000_000_000 + 12345 * 1_000_000 / tck);
    assert_eq!(p.name, "my (odd) app");
    assert_eq!(p.cmdline, "/usr/bin/app --flag x y");
    assert_eq!(p.ppid, 1);
    assert_eq!(
        p.container_id.as_deref(),
        Some("4f6b3c1e8a2d9f0b7c6e5d4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c")
    );
    assert_eq!(p.pod_uid.as_deref(), Some("0c5a4c1e-3d3b-4b6e-9c55-2f1f2e8b7c3d"));
    // The process exits between scans.
    fs::remove_dir_all(&d).unwrap();
    t.scan().unwrap();
    assert!(t.is_empty());
    fs::remove_dir_all(&root).unwrap();
}

const ID: &str = "8d2c5e6f1a3b4c7d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";

#[test]
fn container_ids_from_cgroup_lines() {
    let cases = [
        // Docker, systemd cgroup driver, cgroup v2.
        (format!("0::/system.slice/docker-{ID}.scope\n"), Some(ID), None),
        // Docker, cgroupfs driver, cgroup v1 (several hierarchies).
        (
            format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"),
            Some(ID),
            None,
        ),
        // containerd under Kubernetes, systemd driver.
        (
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod5f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope\n"
            ),
            Some(ID),
            Some("5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"),
        ),
        // Kubernetes, cgroupfs driver, v1.
        (
            format!(
                "10:cpu,cpuacct:/kubepods/burstable/pod5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/{ID}\n"
            ),
            Some(ID),
            Some("5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"),
        ),
        // CRI-O.
        (
            format!(
                "0::/kubepods.slice/kubepods-pod5f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/crio-{ID}.scope\n"
            ),
            Some(ID),
            Some("5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"),
        ),
        // containerd's own cgroup naming ("slice:runtime:id").
        (
            format!("0::/system.slice/containerd.service/kubepods-burstable-pod5f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice:cri-containerd:{ID}\n"),
            Some(ID),
            Some("5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"),
        ),
        // Podman.
        (format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope\n"), Some(ID), None),
        // Not in a container.
        ("0::/user.slice/user-1000.slice/session-3.scope\n".to_string(), None, None),
        ("0::/\n".to_string(), None, None),
        // A 63- or 65-digit run is not an id.
        (format!("0::/docker-{}.scope\n", &ID[..63]), None, None),
        (format!("0::/docker-{ID}a.scope\n"), None, None),
        (String::new(), None, None),
    ];
    for (file, id, pod) in &cases {
        let path = cgroup_path(file);
        assert_eq!(container_id(&path), *id, "{file}");
        assert_eq!(pod_uid(&path).as_deref(), *pod, "{file}");
    }
}

#[test]
fn cgroup_v2_line_wins_over_v1() {
    let file =
        format!("1:name=systemd:/user.slice/long/long/path\n0::/system.slice/docker-{ID}.scope\n");
    assert_eq!(cgroup_path(&file), format!("/system.slice/docker-{ID}.scope"));
    assert_eq!(cgroup_path("garbage\n\n"), "");
}
