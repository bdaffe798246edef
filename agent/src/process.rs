//! The process table: pid -> name, command line, start time, cgroup and
//! container, read from /proc and kept current by exec / exit events.
//!
//! The root is configurable because an agent in a container reads the
//! host's /proc from a mount such as /host/proc.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Longest command line kept, in bytes.
pub const MAX_CMDLINE: usize = 4096;
/// Longest cgroup path kept, in bytes.
const MAX_CGROUP: usize = 1024;
/// Default bound on the number of processes held.
pub const DEFAULT_MAX_PROCESSES: usize = 65_536;

/// What the agent knows of one process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// The kernel's `comm` (at most 15 bytes).
    pub name: String,
    /// Arguments joined by spaces, cut at [`MAX_CMDLINE`] bytes; empty for kernel threads.
    pub cmdline: String,
    /// Unix microseconds (precision: one clock tick, 10 ms on most systems).
    pub start_time_us: u64,
    /// cgroup v2 path (or the v1 hierarchy with the most specific path).
    pub cgroup: String,
    pub container_id: Option<String>,
    /// Kubernetes pod UID, from a kubepods cgroup.
    pub pod_uid: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessStats {
    pub scans: u64,
    /// Processes not held because the table was full.
    pub dropped: u64,
    /// Processes that vanished or could not be read while being read.
    pub read_errors: u64,
}

/// pid -> [`ProcessInfo`], bounded.
pub struct ProcessTable {
    root: PathBuf,
    max: usize,
    procs: HashMap<u32, ProcessInfo>,
    boot_time_us: u64,
    clk_tck: u64,
    stats: ProcessStats,
}

impl Default for ProcessTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessTable {
    /// An empty table over /proc; call [`scan`](Self::scan) to fill it.
    pub fn new() -> Self {
        Self::with_root("/proc", DEFAULT_MAX_PROCESSES)
    }

    pub fn with_root(root: impl Into<PathBuf>, max_processes: usize) -> Self {
        let root = root.into();
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let boot_time_us = boot_time_us(&root);
        ProcessTable {
            root,
            max: max_processes.max(1),
            procs: HashMap::new(),
            boot_time_us,
            clk_tck: if tck > 0 { tck as u64 } else { 100 },
            stats: ProcessStats::default(),
        }
    }

    /// Re-read every process; processes gone since the last scan are removed.
    pub fn scan(&mut self) -> std::io::Result<()> {
        self.stats.scans += 1;
        let mut seen = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if self.refresh(pid).is_some() {
                seen.push(pid);
            }
        }
        seen.sort_unstable();
        self.procs.retain(|pid, _| seen.binary_search(pid).is_ok());
        Ok(())
    }

    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid)
    }

    /// A process exec'd (or was first seen): re-read it.
    pub fn on_exec(&mut self, pid: u32) -> Option<&ProcessInfo> {
        self.refresh(pid)
    }

    /// A process exited: forget it.
    pub fn on_exit(&mut self, pid: u32) -> Option<ProcessInfo> {
        self.procs.remove(&pid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProcessInfo> {
        self.procs.values()
    }

    pub fn stats(&self) -> ProcessStats {
        self.stats
    }

    fn refresh(&mut self, pid: u32) -> Option<&ProcessInfo> {
        if !self.procs.contains_key(&pid) && self.procs.len() >= self.max {
            self.stats.dropped += 1;
            return None;
        }
        match self.read(pid) {
            Some(info) => {
                self.procs.insert(pid, info);
                self.procs.get(&pid)
            }
            None => {
                self.stats.read_errors += 1;
                self.procs.remove(&pid);
                None
            }
        }
    }

    /// Read one process, or None if it is gone (or not a process).
    pub fn read(&self, pid: u32) -> Option<ProcessInfo> {
        let dir = self.root.join(pid.to_string());
        let stat = read_bounded(&dir.join("stat"), 4096)?;
        let stat = parse_stat(&String::from_utf8_lossy(&stat))?;
        let name = read_bounded(&dir.join("comm"), 64)
            .map(|b| String::from_utf8_lossy(&b).trim_end_matches('\n').to_string())
            .unwrap_or(stat.comm);
        let cmdline = read_bounded(&dir.join("cmdline"), MAX_CMDLINE)
            .map(|b| cmdline_text(&b))
            .unwrap_or_default();
        let cgroup = read_bounded(&dir.join("cgroup"), 16 * 1024)
            .map(|b| cgroup_path(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        Some(ProcessInfo {
            pid,
            ppid: stat.ppid,
            name,
            cmdline,
            start_time_us: self.boot_time_us + stat.start_ticks * 1_000_000 / self.clk_tck,
            container_id: container_id(&cgroup).map(str::to_string),
            pod_uid: pod_uid(&cgroup),
            cgroup,
        })
    }
}

/// Boot time in unix µs: btime from <root>/stat, refined to µs with the
/// clocks when the root is this machine's /proc.
fn boot_time_us(root: &Path) -> u64 {
    if root == Path::new("/proc") {
        let now = |clock| {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: ts is a valid timespec to write.
            unsafe { libc::clock_gettime(clock, &mut ts) };
            ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
        };
        // stat's starttime counts from boot including suspend: CLOCK_BOOTTIME.
        return now(libc::CLOCK_REALTIME).saturating_sub(now(libc::CLOCK_BOOTTIME));
    }
    fs::read_to_string(root.join("stat"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
        })
        .map_or(0, |s: u64| s * 1_000_000)
}

fn read_bounded(path: &Path, max: usize) -> Option<Vec<u8>> {
    let f = fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(max.min(4096));
    f.take(max as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

struct Stat {
    comm: String,
    ppid: u32,
    start_ticks: u64,
}

/// /proc/<pid>/stat: "pid (comm) state ppid ... starttime(22) ...". comm
/// may hold spaces and parentheses, so fields are counted after the last ')'.
fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let mut fields = s.get(close + 1..)?.split_ascii_whitespace(); // field 3 onwards
    let ppid = fields.nth(1)?.parse().ok()?; // field 4
    let start_ticks = fields.nth(22 - 5)?.parse().ok()?; // field 22
    Some(Stat { comm, ppid, start_ticks })
}

/// NUL-separated arguments as one line.
fn cmdline_text(b: &[u8]) -> String {
    let b = b.strip_suffix(b"\0").unwrap_or(b);
    let s: Vec<u8> = b.iter().map(|&c| if c == 0 { b' ' } else { c }).collect();
    String::from_utf8_lossy(&s).into_owned()
}

/// The cgroup path of a process from its /proc/<pid>/cgroup: the v2 line
/// ("0::/..."), else the longest v1 path (the most specific hierarchy).
pub fn cgroup_path(file: &str) -> String {
    let mut best: Option<&str> = None;
    for line in file.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrl.is_empty() {
            best = Some(path);
            break;
        }
        if best.is_none_or(|b| path.len() > b.len()) {
            best = Some(path);
        }
    }
    let p = best.unwrap_or("");
    let mut end = p.len().min(MAX_CGROUP);
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    p[..end].to_string()
}

/// Container id from a cgroup path: the last run of exactly 64 hex digits
/// (docker-<id>.scope, /docker/<id>, cri-containerd-<id>.scope,
/// ...slice:cri-containerd:<id>, crio-<id>.scope, libpod-<id>.scope,
/// /kubepods/<qos>/pod<uid>/<id>).
pub fn container_id(cgroup: &str) -> Option<&str> {
    let b = cgroup.as_bytes();
    let mut found = None;
    let mut run_start = None;
    for i in 0..=b.len() {
        let hex = i < b.len() && b[i].is_ascii_hexdigit();
        match (hex, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(s)) => {
                if i - s == 64 {
                    found = Some(&cgroup[s..i]);
                }
                run_start = None;
            }
            _ => {}
        }
    }
    found
}

/// Kubernetes pod UID from a kubepods cgroup: "pod" followed by a UUID,
/// with '-' (cgroupfs driver) or '_' (systemd driver, which escapes '-').
pub fn pod_uid(cgroup: &str) -> Option<String> {
    if !cgroup.contains("kubepods") {
        return None;
    }
    let b = cgroup.as_bytes();
    let mut from = 0;
    while let Some(off) = cgroup[from..].find("pod") {
        let start = from + off + 3;
        if let Some(uid) = b.get(start..start + 36) {
            let is_uuid = uid.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-' || c == b'_',
                _ => c.is_ascii_hexdigit(),
            });
            if is_uuid {
                return Some(String::from_utf8_lossy(uid).replace('_', "-"));
            }
        }
        from = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_in_comm() {
        let s =
            "1234 (a) b (c)) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.comm, "a) b (c)");
        assert_eq!(st.ppid, 77);
        assert_eq!(st.start_ticks, 98765);
        assert!(parse_stat("1 (x) S").is_none());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn cmdline_nul_to_space() {
        assert_eq!(cmdline_text(b"sleep\x0030\x00"), "sleep 30");
        assert_eq!(cmdline_text(b""), "");
    }
}
