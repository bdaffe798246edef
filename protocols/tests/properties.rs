//! Property tests run by CI for a bounded number of cases (PROPTEST_CASES):
//! every parser takes arbitrary and mutated bytes without panicking, and
//! gives the same records whether a flow arrives whole or in pieces.

mod common;

use common::{load_samples, Sample};
use fathom_protocols::fuzzing::{drive, records_whole_and_split};
use fathom_protocols::{Direction, L7Protocol};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn mutated(samples: &[Sample], pick: usize, edits: &[(usize, u8)]) -> Vec<u8> {
    if samples.is_empty() {
        return Vec::new();
    }
    let s = &samples[pick % samples.len()];
    let mut bytes = s.bytes.clone();
    for &(at, v) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = v;
        }
    }
    bytes
}

/// A flow for the fuzzing driver: sample messages (mutated) framed as
/// segments in their own direction.
fn framed(samples: &[Sample], picks: &[usize], edits: &[(usize, u8)], cut: u8) -> Vec<u8> {
    let mut out = vec![cut & 1];
    for (n, &p) in picks.iter().enumerate() {
        if samples.is_empty() {
            break;
        }
        let s = &samples[p % samples.len()];
        let bytes = mutated(samples, p, if n == 0 { edits } else { &[] });
        for chunk in bytes.chunks(200) {
            let dir = u8::from(s.dir == Direction::Response);
            let ctl =
                if n == picks.len() - 1 && cut & 2 != 0 { dir | 2 | (cut & 0xfc) } else { dir };
            out.push(ctl);
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
    }
    out
}

macro_rules! protocol_properties {
    ($name:ident, $proto:expr, $dirs:expr) => {
        mod $name {
            use super::*;

            proptest! {
                // Cases come from PROPTEST_CASES; failures print their minimal input.
                #![proptest_config(ProptestConfig {
                    failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
                    ..ProptestConfig::default()
                })]

                #[test]
                fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
                    drive($proto, &data);
                }

                #[test]
                fn mutated_samples_never_panic(
                    picks in proptest::collection::vec(any::<usize>(), 1..6),
                    edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
                    cut in any::<u8>(),
                ) {
                    let samples = load_samples($dirs);
                    drive($proto, &framed(&samples, &picks, &edits, cut));
                }

                #[test]
                fn segmentation_does_not_change_records(
                    splits in proptest::collection::vec(any::<usize>(), 8),
                ) {
                    for dir in $dirs {
                        let samples = load_samples(&[dir]);
                        let transport = common::transport_of(dir);
                        // Requests first, then responses: a plausible flow order.
                        let mut msgs: Vec<(Direction, &[u8])> = samples
                            .iter()
                            .filter(|s| s.dir == Direction::Request)
                            .map(|s| (s.dir, s.bytes.as_slice()))
                            .collect();
                        msgs.extend(samples.iter().filter(|s| s.dir == Direction::Response)
                            .map(|s| (s.dir, s.bytes.as_slice())));
                        let (mut whole, mut split) = records_whole_and_split($proto, transport, &msgs, &splits);
                        if $proto == L7Protocol::Http1 {
                            // A chunked body not yet complete when its headers
                            // are parsed is reported early with the length seen
                            // so far (streamed responses must not wait for
                            // their end): only there may lengths differ.
                            for r in whole.iter_mut().chain(split.iter_mut()) {
                                r.response_length = None;
                            }
                        }
                        prop_assert_eq!(whole, split);
                    }
                }
            }

            #[test]
            fn has_samples() {
                assert!(!load_samples($dirs).is_empty(), "no samples for {:?}", $dirs);
            }
        }
    };
}

protocol_properties!(http1, L7Protocol::Http1, &["http1"]);
protocol_properties!(http2, L7Protocol::Http2, &["http2"]);
protocol_properties!(dns, L7Protocol::Dns, &["dns-udp", "dns-tcp"]);
protocol_properties!(redis, L7Protocol::Redis, &["redis"]);
protocol_properties!(mysql, L7Protocol::MySql, &["mysql"]);
protocol_properties!(kafka, L7Protocol::Kafka, &["kafka"]);
protocol_properties!(dubbo, L7Protocol::Dubbo, &["dubbo"]);
