//! Loads, attaches and reads the kernel programs.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::raw_trace_point::RawTracePointLinkId;
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use aya::programs::{RawTracePoint, TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};

use crate::events::{decode_reusing, Event, Hook, MAX_CAPTURE_BYTES};

static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fathom.bpf.o"));

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";
const TRACEFS_UNDER_DEBUGFS: &str = "/sys/kernel/debug/tracing";

/// (program, tracepoint category, tracepoint name), in attach order.
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("fathom_sched_exec", "sched", "sched_process_exec"),
    ("fathom_sched_exit", "sched", "sched_process_exit"),
    ("fathom_enter_read", "syscalls", "sys_enter_read"),
    ("fathom_exit_read", "syscalls", "sys_exit_read"),
    ("fathom_enter_write", "syscalls", "sys_enter_write"),
    ("fathom_exit_write", "syscalls", "sys_exit_write"),
    ("fathom_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("fathom_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    ("fathom_enter_sendto", "syscalls", "sys_enter_sendto"),
    ("fathom_exit_sendto", "syscalls", "sys_exit_sendto"),
    ("fathom_enter_readv", "syscalls", "sys_enter_readv"),
    ("fathom_exit_readv", "syscalls", "sys_exit_readv"),
    ("fathom_enter_writev", "syscalls", "sys_enter_writev"),
    ("fathom_exit_writev", "syscalls", "sys_exit_writev"),
    ("fathom_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("fathom_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
    ("fathom_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("fathom_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
    ("fathom_enter_sendmmsg", "syscalls", "sys_enter_sendmmsg"),
    ("fathom_exit_sendmmsg", "syscalls", "sys_exit_sendmmsg"),
    ("fathom_enter_recvmmsg", "syscalls", "sys_enter_recvmmsg"),
    ("fathom_exit_recvmmsg", "syscalls", "sys_exit_recvmmsg"),
    ("fathom_enter_connect", "syscalls", "sys_enter_connect"),
    ("fathom_exit_connect", "syscalls", "sys_exit_connect"),
    ("fathom_exit_accept", "syscalls", "sys_exit_accept"),
    ("fathom_exit_accept4", "syscalls", "sys_exit_accept4"),
    ("fathom_enter_close", "syscalls", "sys_enter_close"),
];

/// (OpenSSL function, entry program, return program). The return programs
/// serve both variants: the entry program records where an _ex count goes.
const SSL_PROBES: &[(&str, &str, &str)] = &[
    ("SSL_write", "fathom_ssl_write_enter", "fathom_ssl_write_exit"),
    ("SSL_write_ex", "fathom_ssl_write_ex_enter", "fathom_ssl_write_exit"),
    ("SSL_read", "fathom_ssl_read_enter", "fathom_ssl_read_exit"),
    ("SSL_read_ex", "fathom_ssl_read_ex_enter", "fathom_ssl_read_exit"),
];

const SSL_PROGRAMS: &[&str] = &[
    "fathom_ssl_write_enter",
    "fathom_ssl_write_ex_enter",
    "fathom_ssl_write_exit",
    "fathom_ssl_read_enter",
    "fathom_ssl_read_ex_enter",
    "fathom_ssl_read_exit",
];

/// Where distributions keep the system OpenSSL, so processes started later
/// are covered even when none maps it now.
const SYSTEM_LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
];

/// Capture settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bytes of each message copied into its event, 0..=4096 (default 1024).
    pub capture_bytes: u32,
    /// Ring buffer size: a power of two, at least one page (default 8 MiB).
    pub ring_buffer_bytes: u32,
    /// The reader is woken each time this many more bytes are pending rather
    /// than for every event, which costs far less at high rates; `poll`'s
    /// timeout bounds how long a smaller batch waits. 0 wakes it for every
    /// event. Capped at half the ring buffer (default 64 KiB).
    pub wakeup_bytes: u32,
    /// Also trace the loading process itself (default false: an agent that
    /// traced its own sends would feed on itself).
    pub trace_self: bool,
    /// Attach uprobes to OpenSSL's SSL_read/SSL_write (default true).
    pub ssl: bool,
    /// libssl files to probe besides those found in the system library
    /// directories and in running processes' memory maps.
    pub ssl_libraries: Vec<PathBuf>,
    /// Classify each socket in the kernel from the first bytes of its first
    /// messages (HTTP/1, HTTP/2, Redis, MySQL, Kafka, Dubbo, DNS) and drop
    /// the data of sockets that are not one of those, including TLS
    /// ciphertext, whose plaintext the uprobes report (default true).
    /// Lifecycle events are not affected. false reports every socket's data.
    pub infer_protocols: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capture_bytes: 1024,
            ring_buffer_bytes: 8 << 20,
            wakeup_bytes: 64 << 10,
            trace_self: false,
            ssl: true,
            ssl_libraries: Vec::new(),
            infer_protocols: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("invalid capture config: {0}")]
    InvalidConfig(String),
    #[error(
        "not permitted to load eBPF programs: {0}; run as root or grant CAP_BPF and CAP_PERFMON \
         (or CAP_SYS_ADMIN)"
    )]
    NotPermitted(String),
    #[error(
        "kernel BTF not available at {path}: {reason}; the programs are CO-RE and need a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoKernelBtf { path: PathBuf, reason: String },
    #[error(
        "kernel {0} is too old: the programs need Linux 5.11 or later (BPF ring buffer, task \
         storage in tracing programs)"
    )]
    KernelTooOld(String),
    #[error("tracefs is not available: {0}")]
    Tracefs(String),
    #[error("loading the eBPF object failed: {0}")]
    Load(String),
    #[error("program {program} failed: {reason}")]
    Program { program: String, reason: String },
    #[error("map {map} failed: {reason}")]
    Map { map: String, reason: String },
    #[error("polling the ring buffer failed: {0}")]
    Poll(std::io::Error),
}

/// The full cause chain, since aya's outer messages alone ("error relocating
/// section") do not say what went wrong.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Per-hook activity, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookCounters {
    pub hook: Hook,
    /// Socket syscalls (or scheduler events) the hook saw.
    pub calls: u64,
    /// Events it delivered to the ring buffer.
    pub events: u64,
    /// Messages dropped by protocol inference (`Config::infer_protocols`).
    pub filtered: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub hooks: Vec<HookCounters>,
    /// Events lost because the ring buffer was full.
    pub ring_buffer_drops: u64,
    /// Records read from the ring buffer that did not decode.
    pub malformed: u64,
    /// Events handed to the caller.
    pub delivered: u64,
}

impl Counters {
    pub fn hook(&self, hook: Hook) -> HookCounters {
        self.hooks.iter().copied().find(|c| c.hook == hook).unwrap_or(HookCounters {
            hook,
            calls: 0,
            events: 0,
            filtered: 0,
        })
    }

    /// Events the kernel side produced, over all hooks.
    pub fn produced(&self) -> u64 {
        self.hooks.iter().map(|c| c.events).sum()
    }
}

/// One libssl the uprobes are attached to, or that refused them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslLibrary {
    pub path: PathBuf,
    /// Functions probed (SSL_write, SSL_write_ex, ...), or empty on failure.
    pub functions: Vec<&'static str>,
    /// Why nothing could be attached, when `functions` is empty.
    pub error: Option<String>,
}

fn is_libssl(path: &Path) -> bool {
    // libssl.so.3, libssl.so.1.1, libssl.so; not NSS's libssl3.so.
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libssl.so"))
}

/// libssl files in the system directories and in every process's maps,
/// as openable paths (through /proc/PID/root for other mount namespaces).
fn find_ssl_libraries(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = extra.to_vec();
    for dir in SYSTEM_LIB_DIRS {
        if let Ok(entries) = std::fs::read_dir(dir) {
            found.extend(
                entries.flatten().map(|e| e.path()).filter(|p| is_libssl(p) && p.is_file()),
            );
        }
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid.to_str().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        // Processes come and go: an unreadable map is skipped.
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for line in maps.lines() {
            let Some(path) = line.split_whitespace().nth(5) else {
                continue;
            };
            let path = Path::new(path);
            if !is_libssl(path) {
                continue;
            }
            let in_ns = Path::new("/proc")
                .join(pid)
                .join("root")
                .join(path.strip_prefix("/").unwrap_or(path));
            let same_file = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b))
            {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            found.push(if same_file(path, &in_ns) { path.to_path_buf() } else { in_ns });
        }
    }
    found
}

/// Checks what loading needs, mounting tracefs if it is missing.
pub fn check_prerequisites() -> Result<(), CaptureError> {
    check_kernel_version()?;
    check_permissions()?;
    check_btf(Path::new(KERNEL_BTF))?;
    ensure_tracefs()?;
    Ok(())
}

/// (major, minor) of a kernel release string such as "6.18.0-1-amd64".
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_kernel_version() -> Result<(), CaptureError> {
    // An unreadable or odd release string is left to the loader to judge.
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return Ok(());
    };
    match kernel_version(&release) {
        Some(version) if version < (5, 11) => {
            Err(CaptureError::KernelTooOld(release.trim().to_string()))
        }
        _ => Ok(()),
    }
}

fn check_permissions() -> Result<(), CaptureError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| CaptureError::NotPermitted(format!("cannot read /proc/self/status: {e}")))?;
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| {
            CaptureError::NotPermitted("no CapEff line in /proc/self/status".to_string())
        })?;
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    Err(CaptureError::NotPermitted(format!(
        "euid {euid} has effective capabilities {caps:#x}, without CAP_BPF+CAP_PERFMON or \
         CAP_SYS_ADMIN"
    )))
}

fn check_btf(path: &Path) -> Result<(), CaptureError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > 0 || meta.is_file() => Ok(()),
        Ok(_) => Err(CaptureError::NoKernelBtf {
            path: path.to_path_buf(),
            reason: "not a file".to_string(),
        }),
        Err(e) => {
            Err(CaptureError::NoKernelBtf { path: path.to_path_buf(), reason: e.to_string() })
        }
    }
}

fn ensure_tracefs() -> Result<(), CaptureError> {
    let has_syscall_events = |root: &str| Path::new(root).join("events/syscalls").is_dir();
    if has_syscall_events(TRACEFS) || has_syscall_events(TRACEFS_UNDER_DEBUGFS) {
        return Ok(());
    }
    if !Path::new(TRACEFS).join("events").is_dir() {
        let source = CString::new("nodev").expect("no NUL");
        let target = CString::new(TRACEFS).expect("no NUL");
        let fstype = CString::new("tracefs").expect("no NUL");
        // SAFETY: all pointers are valid NUL-terminated strings; data may be NULL.
        let rc = unsafe {
            libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null())
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(CaptureError::Tracefs(format!(
                "not mounted at {TRACEFS} and mounting it failed: {err} \
                 (mount -t tracefs nodev {TRACEFS})"
            )));
        }
    }
    if has_syscall_events(TRACEFS) {
        Ok(())
    } else {
        Err(CaptureError::Tracefs(format!(
            "{TRACEFS}/events/syscalls is missing: the kernel has no syscall tracepoints \
             (CONFIG_FTRACE_SYSCALLS)"
        )))
    }
}

fn validate(config: &Config) -> Result<(), CaptureError> {
    if config.capture_bytes > MAX_CAPTURE_BYTES {
        return Err(CaptureError::InvalidConfig(format!(
            "capture_bytes {} exceeds the maximum {MAX_CAPTURE_BYTES}",
            config.capture_bytes
        )));
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    let ring = config.ring_buffer_bytes;
    if !ring.is_power_of_two() || ring < page {
        return Err(CaptureError::InvalidConfig(format!(
            "ring_buffer_bytes {ring} must be a power of two and at least the page size {page}"
        )));
    }
    Ok(())
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Payload buffers [`EbpfCapture::recycle`] keeps for reuse.
pub const MAX_SPARE_BUFFERS: usize = 4096;

/// The loaded and attached programs and their ring buffer. Dropping it
/// detaches and unloads everything.
pub struct EbpfCapture {
    ring: RingBuf<MapData>,
    ssl_enabled: bool,
    ssl_extra: Vec<PathBuf>,
    /// (device, inode) of every libssl already looked at.
    ssl_seen: HashSet<(u64, u64)>,
    /// Configured libraries that could not be opened (reported once).
    ssl_missing: HashSet<PathBuf>,
    ssl_libraries: Vec<SslLibrary>,
    links: Vec<(&'static str, Link)>,
    counters: PerCpuArray<MapData, u64>,
    program_ids: Vec<u32>,
    malformed: u64,
    delivered: u64,
    /// Payload buffers given back by the consumer, reused by decoding.
    spare: Vec<Vec<u8>>,
    unix_minus_monotonic_ns: i128,
    // Last: links and programs go after the maps' user-side handles.
    ebpf: Ebpf,
}

impl EbpfCapture {
    /// Checks prerequisites, loads every program and attaches it.
    pub fn load(config: Config) -> Result<Self, CaptureError> {
        validate(&config)?;
        check_prerequisites()?;

        let ignore_tgid: u32 = if config.trace_self { 0 } else { std::process::id() };
        let wakeup_bytes = config.wakeup_bytes.min(config.ring_buffer_bytes / 2);
        let infer_protocols = u32::from(config.infer_protocols);
        let mut ebpf = EbpfLoader::new()
            // Task storage (the per-thread syscall stash) has no aya wrapper;
            // only the kernel side uses it.
            .allow_unsupported_maps()
            .override_global("capture_bytes", &config.capture_bytes, true)
            .override_global("ignore_tgid", &ignore_tgid, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .override_global("infer_protocols", &infer_protocols, true)
            .map_max_entries("events", config.ring_buffer_bytes)
            .load(BPF_OBJECT)
            .map_err(|e| CaptureError::Load(chain(&e)))?;

        let mut program_ids = Vec::with_capacity(TRACEPOINTS.len());
        let mut links = Vec::new();
        for &(name, category, tracepoint) in TRACEPOINTS {
            let program_err =
                |reason: String| CaptureError::Program { program: name.to_string(), reason };
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| program_err("missing from the object".to_string()))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| program_err(chain(&e)))?;
            program
                .load()
                .map_err(|e| program_err(format!("verifier rejected it: {}", chain(&e))))?;
            let link = program.attach(category, tracepoint).map_err(|e| {
                program_err(format!(
                    "attaching to tracepoint {category}/{tracepoint}: {}",
                    chain(&e)
                ))
            })?;
            links.push((name, Link::TracePoint(link)));
            let id = program.info().map_err(|e| program_err(chain(&e)))?.id();
            program_ids.push(id);
        }
        {
            // Raw, not a plain tracepoint: its arguments are the parent and
            // child tasks, which tell a new process from a new thread.
            let name = "fathom_sched_fork";
            let program_err =
                |reason: String| CaptureError::Program { program: name.to_string(), reason };
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| program_err("missing from the object".to_string()))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| program_err(chain(&e)))?;
            program
                .load()
                .map_err(|e| program_err(format!("verifier rejected it: {}", chain(&e))))?;
            let link = program.attach("sched_process_fork").map_err(|e| {
                program_err(format!(
                    "attaching to raw tracepoint sched_process_fork: {}",
                    chain(&e)
                ))
            })?;
            links.push((name, Link::RawTracePoint(link)));
            program_ids.push(program.info().map_err(|e| program_err(chain(&e)))?.id());
        }
        if config.ssl {
            for &name in SSL_PROGRAMS {
                let program_err =
                    |reason: String| CaptureError::Program { program: name.to_string(), reason };
                let program: &mut UProbe = ebpf
                    .program_mut(name)
                    .ok_or_else(|| program_err("missing from the object".to_string()))?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| program_err(chain(&e)))?;
                program
                    .load()
                    .map_err(|e| program_err(format!("verifier rejected it: {}", chain(&e))))?;
                let id = program.info().map_err(|e| program_err(chain(&e)))?.id();
                program_ids.push(id);
            }
        }

        let map_err =
            |map: &str, reason: String| CaptureError::Map { map: map.to_string(), reason };
        // Trace ids start from the wall clock so they do not repeat across restarts.
        {
            let seq = ebpf
                .map_mut("trace_id_seq")
                .ok_or_else(|| map_err("trace_id_seq", "missing".to_string()))?;
            let mut seq: Array<_, u64> =
                Array::try_from(seq).map_err(|e| map_err("trace_id_seq", chain(&e)))?;
            seq.set(0, clock_ns(libc::CLOCK_REALTIME), 0)
                .map_err(|e| map_err("trace_id_seq", chain(&e)))?;
        }
        let ring =
            ebpf.take_map("events").ok_or_else(|| map_err("events", "missing".to_string()))?;
        let ring = RingBuf::try_from(ring).map_err(|e| map_err("events", chain(&e)))?;
        let counters =
            ebpf.take_map("counters").ok_or_else(|| map_err("counters", "missing".to_string()))?;
        let counters =
            PerCpuArray::try_from(counters).map_err(|e| map_err("counters", chain(&e)))?;

        let unix_minus_monotonic_ns = i128::from(clock_ns(libc::CLOCK_REALTIME))
            - i128::from(clock_ns(libc::CLOCK_MONOTONIC));
        let mut capture = EbpfCapture {
            ring,
            ssl_enabled: config.ssl,
            ssl_extra: config.ssl_libraries,
            ssl_seen: HashSet::new(),
            ssl_missing: HashSet::new(),
            ssl_libraries: Vec::new(),
            links,
            counters,
            program_ids,
            malformed: 0,
            delivered: 0,
            spare: Vec::new(),
            unix_minus_monotonic_ns,
            ebpf,
        };
        capture.attach_new_ssl_libraries();
        Ok(capture)
    }

    /// Looks for libssl files not probed yet (new containers, programs that
    /// bring their own OpenSSL) and attaches to them. Returns what it found,
    /// and configured libraries it could not open; call it now and then, or
    /// on exec events. A library that refuses the probes is reported in the
    /// result, not an error: the rest still works.
    pub fn attach_new_ssl_libraries(&mut self) -> Vec<SslLibrary> {
        if !self.ssl_enabled {
            return Vec::new();
        }
        let mut attached = Vec::new();
        for path in find_ssl_libraries(&self.ssl_extra) {
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                // A process's library may vanish with it; a configured one
                // that cannot be opened is reported, once.
                Err(err) => {
                    if self.ssl_extra.contains(&path) && self.ssl_missing.insert(path.clone()) {
                        let library = SslLibrary {
                            path,
                            functions: Vec::new(),
                            error: Some(format!("cannot open it: {err}")),
                        };
                        self.ssl_libraries.push(library.clone());
                        attached.push(library);
                    }
                    continue;
                }
            };
            if !self.ssl_seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let library = self.attach_ssl(&path);
            self.ssl_libraries.push(library.clone());
            attached.push(library);
        }
        attached
    }

    fn attach_ssl(&mut self, path: &Path) -> SslLibrary {
        let mut functions = Vec::new();
        let mut last_error = None;
        for &(function, enter, exit) in SSL_PROBES {
            // The return probe goes first: an entry without its return
            // would only leave stale state behind.
            let result = [exit, enter].into_iter().try_for_each(|name| {
                let program: &mut UProbe = self
                    .ebpf
                    .program_mut(name)
                    .ok_or_else(|| format!("{name} missing from the object"))?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| chain(&e))?;
                let link = program
                    .attach(function, path, UProbeScope::AllProcesses)
                    .map_err(|e| format!("{function}: {}", chain(&e)))?;
                self.links.push((name, Link::UProbe(link)));
                Ok(())
            });
            match result {
                Ok(()) => functions.push(function),
                // OpenSSL before 1.1.1 has no _ex variants.
                Err(e) => last_error = Some(e),
            }
        }
        SslLibrary {
            path: path.to_path_buf(),
            error: if functions.is_empty() { last_error } else { None },
            functions,
        }
    }

    /// Every libssl looked at so far, with what was attached.
    pub fn ssl_libraries(&self) -> &[SslLibrary] {
        &self.ssl_libraries
    }

    /// Waits up to `timeout` for events, then yields every event available.
    /// The iterator ends when the ring buffer is empty. Returns at once when
    /// events are already pending; otherwise the kernel wakes it when
    /// `Config::wakeup_bytes` are pending, so under light traffic it returns
    /// at the timeout with what came in meanwhile. Events come in the order
    /// the kernel queued them: per thread that is syscall order; across
    /// CPUs it is close to, not strictly, `ts_ns` order.
    pub fn poll(&mut self, timeout: Duration) -> Result<Events<'_>, CaptureError> {
        let mut pfd = libc::pollfd { fd: self.ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: pfd is one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            // A signal just cuts the wait short; whatever is there is still read.
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(CaptureError::Poll(err));
            }
        }
        Ok(Events { capture: self })
    }

    /// Give payload buffers of consumed data events back: later events are
    /// decoded into them instead of new allocations. At most
    /// [`MAX_SPARE_BUFFERS`] are kept; the rest are freed.
    pub fn recycle(&mut self, buffers: impl IntoIterator<Item = Vec<u8>>) {
        for b in buffers {
            if self.spare.len() >= MAX_SPARE_BUFFERS {
                break;
            }
            self.spare.push(b);
        }
    }

    /// Counters from the kernel side plus what userspace decoded.
    pub fn counters(&self) -> Result<Counters, CaptureError> {
        let read = |index: u32| -> Result<u64, CaptureError> {
            let values = self.counters.get(&index, 0).map_err(|e| CaptureError::Map {
                map: "counters".to_string(),
                reason: chain(&e),
            })?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        // Layout: see fathom_events.h.
        let num_hooks = Hook::ALL.len() as u32;
        let mut hooks = Vec::with_capacity(Hook::ALL.len());
        for hook in Hook::ALL {
            hooks.push(HookCounters {
                hook,
                calls: read(hook.index() * 2)?,
                events: read(hook.index() * 2 + 1)?,
                filtered: read(num_hooks * 2 + 1 + hook.index())?,
            });
        }
        Ok(Counters {
            hooks,
            ring_buffer_drops: read(num_hooks * 2)?,
            malformed: self.malformed,
            delivered: self.delivered,
        })
    }

    /// Kernel ids of the loaded programs (as `bpftool prog list` shows them).
    pub fn program_ids(&self) -> &[u32] {
        &self.program_ids
    }

    /// Converts an event timestamp (CLOCK_MONOTONIC) to ns since the Unix epoch.
    pub fn to_unix_ns(&self, ts_ns: u64) -> u64 {
        (i128::from(ts_ns) + self.unix_minus_monotonic_ns).clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// An attachment, by program name, so Drop can detach them all at once.
enum Link {
    TracePoint(TracePointLinkId),
    RawTracePoint(RawTracePointLinkId),
    UProbe(UProbeLinkId),
}

impl Drop for EbpfCapture {
    /// Detaching a tracepoint or uprobe waits for an RCU grace period:
    /// one after another, over three seconds for the ~40 links here;
    /// concurrently, about half that.
    fn drop(&mut self) {
        let mut owned: Vec<Box<dyn Send>> = Vec::with_capacity(self.links.len());
        for (name, link) in self.links.drain(..) {
            let Some(program) = self.ebpf.program_mut(name) else {
                continue;
            };
            // A link that cannot be taken is still detached when the
            // program is dropped with `ebpf`, only one at a time.
            let taken: Option<Box<dyn Send>> = match link {
                Link::TracePoint(id) => <&mut TracePoint>::try_from(program)
                    .ok()
                    .and_then(|p| p.take_link(id).ok())
                    .map(|l| Box::new(l) as Box<dyn Send>),
                Link::RawTracePoint(id) => <&mut RawTracePoint>::try_from(program)
                    .ok()
                    .and_then(|p| p.take_link(id).ok())
                    .map(|l| Box::new(l) as Box<dyn Send>),
                Link::UProbe(id) => <&mut UProbe>::try_from(program)
                    .ok()
                    .and_then(|p| p.take_link(id).ok())
                    .map(|l| Box::new(l) as Box<dyn Send>),
            };
            owned.extend(taken);
        }
        std::thread::scope(|scope| {
            for link in owned {
                // Should no thread be had, the closure and so the link are
                // dropped right here instead.
                let _ = std::thread::Builder::new()
                    .name("fathom-detach".into())
                    .spawn_scoped(scope, move || drop(link));
            }
        });
    }
}

/// Events available in the ring buffer; see [`EbpfCapture::poll`].
pub struct Events<'a> {
    capture: &'a mut EbpfCapture,
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let decoded = {
                let record = self.capture.ring.next()?;
                decode_reusing(&record, &mut self.capture.spare)
            };
            match decoded {
                Ok(event) => {
                    self.capture.delivered += 1;
                    return Some(event);
                }
                Err(_) => self.capture.malformed += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_btf_is_a_clear_error() {
        let err = check_btf(Path::new("/nonexistent/btf/vmlinux")).unwrap_err();
        assert!(matches!(err, CaptureError::NoKernelBtf { .. }));
        let text = err.to_string();
        assert!(text.contains("/nonexistent/btf/vmlinux"), "{text}");
        assert!(text.contains("CONFIG_DEBUG_INFO_BTF"), "{text}");
    }

    #[test]
    fn kernel_release_strings() {
        assert_eq!(kernel_version("6.18.0-1-amd64\n"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("5.15+"), Some((5, 15)));
        assert_eq!(kernel_version("garbage"), None);
        assert_eq!(kernel_version(""), None);
        assert!(kernel_version("5.10.0").unwrap() < (5, 11));
        let err = CaptureError::KernelTooOld("5.4.0".into()).to_string();
        assert!(err.contains("5.4.0") && err.contains("5.11"), "{err}");
    }

    #[test]
    fn config_limits() {
        let with = |capture_bytes, ring_buffer_bytes| Config {
            capture_bytes,
            ring_buffer_bytes,
            ..Config::default()
        };
        assert!(validate(&Config::default()).is_ok());
        assert!(validate(&with(0, 4096)).is_ok());
        assert!(validate(&with(MAX_CAPTURE_BYTES, 1 << 30)).is_ok());
        assert!(validate(&with(MAX_CAPTURE_BYTES + 1, 4096)).is_err());
        assert!(validate(&with(1024, 0)).is_err());
        assert!(validate(&with(1024, 2048)).is_err());
        assert!(validate(&with(1024, 3 * 4096)).is_err());
    }

    #[test]
    fn only_openssl_libssl_is_probed() {
        assert!(is_libssl(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")));
        assert!(is_libssl(Path::new("/opt/app/lib/libssl.so.1.1")));
        assert!(!is_libssl(Path::new("/usr/lib/x86_64-linux-gnu/libssl3.so")));
        assert!(!is_libssl(Path::new("/usr/lib/x86_64-linux-gnu/libcrypto.so.3")));
        assert!(!is_libssl(Path::new("/")));
    }

    #[test]
    fn capture_can_move_to_a_reader_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<EbpfCapture>();
    }
}
