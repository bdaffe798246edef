//! Every detector against every protocol's sample messages: only the owner
//! may fire, and it must name the right direction. Prefixes (truncated
//! captures) may go undetected but never detected as something else.

mod common;

use common::{load_samples, protocol_of, transport_of, FOLDERS};
use fathom_protocols::detect;

#[test]
fn only_the_owner_detects_its_samples() {
    let samples = load_samples(&FOLDERS);
    assert!(samples.len() >= FOLDERS.len(), "expected samples in every folder");
    let mut failures = Vec::new();
    let mut detected = 0;
    for s in &samples {
        let want = (protocol_of(s.folder), s.dir);
        let transport = transport_of(s.folder);
        // A flow's first message in either direction must be recognised.
        if s.name.contains("first") || s.name.starts_with("req") || s.name.starts_with("resp") {
            let got = detect(&s.bytes, transport, None);
            match got {
                Some(g) if g == want => detected += 1,
                // Some protocols cannot tell from a response alone (Kafka):
                // silence is allowed only for responses, and only there.
                None if s.dir == fathom_protocols::Direction::Response
                    && want.0 == fathom_protocols::L7Protocol::Kafka => {}
                other => {
                    failures.push(format!("{}/{}: want {want:?}, got {other:?}", s.folder, s.name))
                }
            }
        }
        for n in [16usize, 64, 256, 1024] {
            if n >= s.bytes.len() {
                continue;
            }
            match detect(&s.bytes[..n], transport, None) {
                None => {}
                Some(g) if g == want => {}
                Some(g) => {
                    failures.push(format!("{}/{} cut at {n}: detected as {g:?}", s.folder, s.name))
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} detection failures:\n{}", failures.len(), failures.join("\n"));
    eprintln!(
        "detection matrix: {detected}/{} samples detected as their own protocol",
        samples.len()
    );
}
