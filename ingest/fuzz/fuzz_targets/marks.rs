//! The high-water mark file reader on any bytes: it never panics, stops at
//! the first torn or corrupt record, and keeps the highest id per agent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (marks, intact) = fathom_ingest::hwm::parse(data);
    assert!(intact <= data.len());
    // The intact prefix alone reads the same.
    let (again, n) = fathom_ingest::hwm::parse(&data[..intact]);
    assert_eq!((n, &again), (intact, &marks));
});
