//! Loads, attaches and reads the kernel programs.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};

use crate::events::{decode, Event, Hook, MAX_CAPTURE_BYTES};

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
    ("fathom_enter_connect", "syscalls", "sys_enter_connect"),
    ("fathom_exit_connect", "syscalls", "sys_exit_connect"),
    ("fathom_exit_accept", "syscalls", "sys_exit_accept"),
    ("fathom_exit_accept4", "syscalls", "sys_exit_accept4"),
    ("fathom_enter_close", "syscalls", "sys_enter_close"),
];

/// Capture settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bytes of each message copied into its event, 0..=4096 (default 1024).
    pub capture_bytes: u32,
    /// Ring buffer size: a power of two, at least one page (default 8 MiB).
    pub ring_buffer_bytes: u32,
    /// Also trace the loading process itself (default false: an agent that
    /// traced its own sends would feed on itself).
    pub trace_self: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capture_bytes: 1024,
            ring_buffer_bytes: 8 << 20,
            trace_self: false,
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
        self.hooks
            .iter()
            .copied()
            .find(|c| c.hook == hook)
            .unwrap_or(HookCounters {
                hook,
                calls: 0,
                events: 0,
            })
    }

    /// Events the kernel side produced, over all hooks.
    pub fn produced(&self) -> u64 {
        self.hooks.iter().map(|c| c.events).sum()
    }
}

/// Checks what loading needs, mounting tracefs if it is missing.
pub fn check_prerequisites() -> Result<(), CaptureError> {
    check_permissions()?;
    check_btf(Path::new(KERNEL_BTF))?;
    ensure_tracefs()?;
    Ok(())
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
        Err(e) => Err(CaptureError::NoKernelBtf {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
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
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
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
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// The loaded and attached programs and their ring buffer. Dropping it
/// detaches and unloads everything.
pub struct EbpfCapture {
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    program_ids: Vec<u32>,
    malformed: u64,
    delivered: u64,
    unix_minus_monotonic_ns: i128,
    // Last: links and programs go after the maps' user-side handles.
    _ebpf: Ebpf,
}

impl EbpfCapture {
    /// Checks prerequisites, loads every program and attaches it.
    pub fn load(config: Config) -> Result<Self, CaptureError> {
        validate(&config)?;
        check_prerequisites()?;

        let ignore_tgid: u32 = if config.trace_self {
            0
        } else {
            std::process::id()
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("capture_bytes", &config.capture_bytes, true)
            .override_global("ignore_tgid", &ignore_tgid, true)
            .map_max_entries("events", config.ring_buffer_bytes)
            .load(BPF_OBJECT)
            .map_err(|e| CaptureError::Load(chain(&e)))?;

        let mut program_ids = Vec::with_capacity(TRACEPOINTS.len());
        for &(name, category, tracepoint) in TRACEPOINTS {
            let program_err = |reason: String| CaptureError::Program {
                program: name.to_string(),
                reason,
            };
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| program_err("missing from the object".to_string()))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| program_err(chain(&e)))?;
            program
                .load()
                .map_err(|e| program_err(format!("verifier rejected it: {}", chain(&e))))?;
            program.attach(category, tracepoint).map_err(|e| {
                program_err(format!(
                    "attaching to tracepoint {category}/{tracepoint}: {}",
                    chain(&e)
                ))
            })?;
            let id = program.info().map_err(|e| program_err(chain(&e)))?.id();
            program_ids.push(id);
        }

        let map_err = |map: &str, reason: String| CaptureError::Map {
            map: map.to_string(),
            reason,
        };
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
        let ring = ebpf
            .take_map("events")
            .ok_or_else(|| map_err("events", "missing".to_string()))?;
        let ring = RingBuf::try_from(ring).map_err(|e| map_err("events", chain(&e)))?;
        let counters = ebpf
            .take_map("counters")
            .ok_or_else(|| map_err("counters", "missing".to_string()))?;
        let counters =
            PerCpuArray::try_from(counters).map_err(|e| map_err("counters", chain(&e)))?;

        let unix_minus_monotonic_ns = i128::from(clock_ns(libc::CLOCK_REALTIME))
            - i128::from(clock_ns(libc::CLOCK_MONOTONIC));
        Ok(EbpfCapture {
            ring,
            counters,
            program_ids,
            malformed: 0,
            delivered: 0,
            unix_minus_monotonic_ns,
            _ebpf: ebpf,
        })
    }

    /// Waits up to `timeout` for events, then yields every event available.
    /// The iterator ends when the ring buffer is empty.
    pub fn poll(&mut self, timeout: Duration) -> Result<Events<'_>, CaptureError> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
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

    /// Counters from the kernel side plus what userspace decoded.
    pub fn counters(&self) -> Result<Counters, CaptureError> {
        let read = |index: u32| -> Result<u64, CaptureError> {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(|e| CaptureError::Map {
                    map: "counters".to_string(),
                    reason: chain(&e),
                })?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        let mut hooks = Vec::with_capacity(Hook::ALL.len());
        for hook in Hook::ALL {
            hooks.push(HookCounters {
                hook,
                calls: read(hook.index() * 2)?,
                events: read(hook.index() * 2 + 1)?,
            });
        }
        Ok(Counters {
            hooks,
            ring_buffer_drops: read(Hook::ALL.len() as u32 * 2)?,
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
                decode(&record)
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
