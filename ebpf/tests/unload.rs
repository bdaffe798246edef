//! Dropping the capture leaves nothing loaded or attached. In a test binary of
//! its own: it checks the ids of its own programs, so other captures running
//! on the machine at the same time do not disturb it.

mod common;

use std::process::Command;

fn prog_loaded(id: u32) -> bool {
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .expect("run bpftool (apt-get install bpftool)");
    out.status.success()
}

/// Program ids that have a BPF link (the tracepoint attachments).
fn linked_programs() -> Vec<u32> {
    let out =
        Command::new("bpftool").args(["link", "list"]).output().expect("run bpftool link list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(2).filter(|w| w[0] == "prog").filter_map(|w| w[1].parse().ok()).collect()
}

#[test]
fn drop_unloads_every_program() {
    let capture = common::load();
    let ids = capture.program_ids().to_vec();
    // 27 tracepoint programs, 1 raw tracepoint, 6 OpenSSL uprobe programs.
    assert_eq!(ids.len(), 34);
    assert!(
        capture.ssl_libraries().iter().any(|l| l.error.is_none()),
        "no libssl probed: {:?}",
        capture.ssl_libraries()
    );
    for &id in &ids {
        assert!(prog_loaded(id), "program {id} not visible to bpftool while loaded");
    }
    let attached = linked_programs();
    let unattached: Vec<u32> = ids.iter().copied().filter(|id| !attached.contains(id)).collect();
    assert!(unattached.is_empty(), "programs without a link: {unattached:?}");

    drop(capture);
    let left: Vec<u32> = ids.iter().copied().filter(|&id| prog_loaded(id)).collect();
    assert!(left.is_empty(), "programs still loaded after drop: {left:?}");
    let attached = linked_programs();
    let still: Vec<u32> = ids.iter().copied().filter(|id| attached.contains(id)).collect();
    assert!(still.is_empty(), "programs still attached after drop: {still:?}");
}
