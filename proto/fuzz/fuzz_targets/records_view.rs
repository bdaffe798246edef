//! Arbitrary bytes as a Records payload: the borrowing decoder ingest uses
//! must give what prost gives, the same records or a refusal. Any panic
//! or difference is a bug.
#![no_main]
use fathom_proto::view::RecordsView;
use fathom_proto::{RecordCounts, Records};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let ours = RecordsView::decode(data, RecordCounts::default()).and_then(|v| v.to_message());
    match (ours, Records::decode(data)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("view {a:?}, prost {b:?}"),
    }
});
