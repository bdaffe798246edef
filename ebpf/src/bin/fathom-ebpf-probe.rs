//! Loads the capture programs, prints what they see for a while, then the
//! counters. Exits 2 with the reason when the programs cannot be loaded.
//!
//! usage: fathom-ebpf-probe [SECONDS] [--quiet] [--no-infer]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use fathom_ebpf::{Config, EbpfCapture, Event};

fn main() -> ExitCode {
    let mut seconds = 5u64;
    let mut quiet = false;
    let mut config = Config::default();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quiet" => quiet = true,
            "--no-infer" => config.infer_protocols = false,
            "-h" | "--help" => {
                println!("usage: fathom-ebpf-probe [SECONDS] [--quiet] [--no-infer]");
                return ExitCode::SUCCESS;
            }
            other => match other.parse() {
                Ok(n) => seconds = n,
                Err(_) => {
                    eprintln!("fathom-ebpf-probe: not a number of seconds: {other}");
                    return ExitCode::from(64);
                }
            },
        }
    }

    let mut capture = match EbpfCapture::load(config) {
        Ok(capture) => capture,
        Err(err) => {
            eprintln!("fathom-ebpf-probe: {err}");
            return ExitCode::from(2);
        }
    };
    println!("loaded {} programs", capture.program_ids().len());
    for library in capture.ssl_libraries() {
        match &library.error {
            None => println!("ssl: {} ({})", library.path.display(), library.functions.join(", ")),
            Some(err) => println!("ssl: {} not probed: {err}", library.path.display()),
        }
    }

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut delivered = 0u64;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let events = match capture.poll(left.min(Duration::from_millis(200))) {
            Ok(events) => events,
            Err(err) => {
                eprintln!("fathom-ebpf-probe: {err}");
                return ExitCode::from(1);
            }
        };
        for event in events {
            delivered += 1;
            if quiet {
                continue;
            }
            match event {
                Event::Data(d) => println!(
                    "{:?} {:?} pid={} tid={} fd={} comm={} {} -> {} {:?} seq={} len={} cap={} id={} {:?}",
                    d.hook,
                    d.direction,
                    d.pid,
                    d.tid,
                    d.fd,
                    d.comm,
                    d.src,
                    d.dst,
                    d.l4,
                    d.tcp_seq,
                    d.syscall_len,
                    d.payload.len(),
                    d.syscall_trace_id,
                    String::from_utf8_lossy(&d.payload[..d.payload.len().min(40)]),
                ),
                Event::Socket(s) => println!(
                    "{:?} pid={} fd={} comm={} {} -> {} {:?} seq={}",
                    s.kind, s.pid, s.fd, s.comm, s.src, s.dst, s.l4, s.tcp_seq
                ),
                Event::Process(p) => println!(
                    "{:?} pid={} ppid={} comm={}",
                    p.kind, p.pid, p.ppid, p.comm
                ),
            }
        }
    }
    match capture.counters() {
        Ok(counters) => {
            println!(
                "delivered {delivered} events ({:.0}/s), ring buffer drops {}, malformed {}",
                delivered as f64 / seconds.max(1) as f64,
                counters.ring_buffer_drops,
                counters.malformed
            );
            for hook in &counters.hooks {
                println!(
                    "  {:<20} calls {:>10} events {:>10} filtered {:>10}",
                    hook.hook.name(),
                    hook.calls,
                    hook.events,
                    hook.filtered
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("fathom-ebpf-probe: {err}");
            ExitCode::from(1)
        }
    }
}
