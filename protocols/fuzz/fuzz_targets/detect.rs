//! Arbitrary bytes through every protocol detector. Any panic is a bug.
#![no_main]
use fathom_protocols::{detect, Direction, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for t in [Transport::Tcp, Transport::Udp] {
        let _ = detect(data, t, None);
        let _ = detect(data, t, Some(Direction::Request));
    }
});
