//! eBPF kernel programs (C, CO-RE) and their aya loader.
//!
//! The programs in `bpf/` hook syscall and scheduler tracepoints, resolve each
//! socket syscall's fd to its TCP/UDP 5-tuple in the kernel, and deliver socket
//! data (with the first bytes of each message), socket lifecycle and process
//! events through one ring buffer. [`EbpfCapture`] loads and attaches them and
//! decodes the records into [`Event`]s.

mod capture;
mod events;

pub use capture::{
    check_prerequisites, CaptureError, Config, Counters, EbpfCapture, Events, HookCounters,
    SslLibrary, MAX_SPARE_BUFFERS,
};
pub use events::{
    decode, decode_reusing, Comm, DecodeError, Direction, Event, Hook, L4Proto, ProcessEvent,
    ProcessEventKind, SocketDataEvent, SocketEvent, SocketEventKind, MAX_CAPTURE_BYTES,
};
