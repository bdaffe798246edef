//! Arbitrary bytes as a Http2 flow: detection, segmentation, truncation,
//! pairing. Any panic is a bug.
#![no_main]
use fathom_protocols::{fuzzing, L7Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::drive(L7Protocol::Http2, data);
});
