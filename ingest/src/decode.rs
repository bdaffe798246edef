//! Batch validation and decoding, with every size bounded before memory
//! is committed to it.
//!
//! The payload is decompressed once and the records borrow from it: L7
//! records stay encoded until conversion decodes them one at a time
//! ([`fathom_proto::view`]), so text is copied only into the rows that keep
//! it.

use std::borrow::Cow;

use fathom_proto::view::RecordsView;
use fathom_proto::{Compression, RecordBatch, RecordCounts};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_batch_bytes: usize,
    pub max_decompressed_bytes: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("batch {batch_id}: payload is {size} bytes, more than the limit of {limit}")]
    TooLarge { batch_id: u64, size: u64, limit: u64 },
    #[error("batch {batch_id}: {0}", .message)]
    Malformed { batch_id: u64, message: String },
}

impl DecodeError {
    fn malformed(batch_id: u64, message: impl Into<String>) -> Self {
        DecodeError::Malformed { batch_id, message: message.into() }
    }
}

/// A batch's payload, decompressed within the limits.
pub fn decompress(b: &RecordBatch, limits: Limits) -> Result<Cow<'_, [u8]>, DecodeError> {
    let id = b.batch_id;
    if b.payload.len() > limits.max_batch_bytes {
        return Err(DecodeError::TooLarge {
            batch_id: id,
            size: b.payload.len() as u64,
            limit: limits.max_batch_bytes as u64,
        });
    }
    match Compression::try_from(b.compression) {
        Ok(Compression::None) => Ok(Cow::Borrowed(&b.payload)),
        Ok(Compression::Zstd) => {
            if b.uncompressed_size > limits.max_decompressed_bytes as u64 {
                return Err(DecodeError::TooLarge {
                    batch_id: id,
                    size: b.uncompressed_size,
                    limit: limits.max_decompressed_bytes as u64,
                });
            }
            // The frame may claim anything; zstd stops at `capacity`.
            if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(&b.payload) {
                if n > b.uncompressed_size {
                    return Err(DecodeError::malformed(
                        id,
                        format!(
                            "zstd frame holds {n} bytes, the batch declares {}",
                            b.uncompressed_size
                        ),
                    ));
                }
            }
            let raw =
                zstd::bulk::decompress(&b.payload, b.uncompressed_size as usize).map_err(|e| {
                    DecodeError::malformed(
                        id,
                        format!(
                            "zstd payload does not decompress within the declared {} bytes: {e}",
                            b.uncompressed_size
                        ),
                    )
                })?;
            Ok(Cow::Owned(raw))
        }
        Err(_) => Err(DecodeError::malformed(id, format!("unknown compression {}", b.compression))),
    }
}

/// Splits a batch's decompressed payload into its records and checks
/// their counts. L7 records are decoded later, by `Tagger::convert`.
pub fn decode_records<'a>(
    b: &RecordBatch,
    bytes: &'a [u8],
) -> Result<RecordsView<'a>, DecodeError> {
    let id = b.batch_id;
    // Sized from the declared counts: no regrowth (and copying) of the
    // record vectors while decoding. Every record takes at least 2 bytes on
    // the wire, so lying counts reserve no more than the payload could
    // decode to anyway.
    let mut capacity = RecordCounts::default();
    if let Some(c) = b.counts {
        let mut left = bytes.len() / 2;
        let mut take = |n: u32| {
            let n = n.min(u32::try_from(left).unwrap_or(u32::MAX));
            left -= n as usize;
            n
        };
        capacity = RecordCounts {
            l7: take(c.l7),
            l4: take(c.l4),
            red: take(c.red),
            network: take(c.network),
            process: take(c.process),
        };
    }
    let recs = RecordsView::decode(bytes, capacity).map_err(|e| {
        DecodeError::malformed(id, format!("payload is not a Records message: {e}"))
    })?;
    if let Some(want) = b.counts {
        let got = recs.counts();
        if got != want {
            return Err(DecodeError::malformed(
                id,
                format!("record counts {got:?} do not match the declared {want:?}"),
            ));
        }
    }
    Ok(recs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fathom_proto::{L7Log, Records};
    use prost::Message;

    /// Both steps, to the owned records.
    fn decode_batch(b: &RecordBatch, limits: Limits) -> Result<Records, DecodeError> {
        let bytes = decompress(b, limits)?;
        let recs = decode_records(b, &bytes)?;
        Ok(recs.to_message().expect("the L7 records decode"))
    }

    const LIMITS: Limits = Limits { max_batch_bytes: 1 << 20, max_decompressed_bytes: 4 << 20 };

    fn batch(recs: &Records) -> RecordBatch {
        let raw = recs.encode_to_vec();
        RecordBatch {
            agent_id: "a".into(),
            batch_id: 7,
            compression: Compression::Zstd as i32,
            payload: zstd::bulk::compress(&raw, 1).unwrap(),
            uncompressed_size: raw.len() as u64,
            counts: Some(recs.counts()),
            host: "h".into(),
            host_ips: Vec::new(),
        }
    }

    #[test]
    fn good_batch_decodes() {
        let recs = Records { l7: vec![L7Log::default(); 3], ..Default::default() };
        assert_eq!(decode_batch(&batch(&recs), LIMITS).unwrap(), recs);
    }

    #[test]
    fn bombs_and_lies_are_refused() {
        // 64 MiB of zeros compress to a few KiB.
        let zeros = vec![0u8; 64 << 20];
        let mut b = batch(&Records::default());
        b.payload = zstd::bulk::compress(&zeros, 3).unwrap();
        assert!(b.payload.len() < LIMITS.max_batch_bytes);
        b.uncompressed_size = zeros.len() as u64;
        assert!(matches!(decode_batch(&b, LIMITS), Err(DecodeError::TooLarge { .. })));
        // Declaring a small size does not help: the frame says otherwise.
        b.uncompressed_size = 1000;
        let e = decode_batch(&b, LIMITS).unwrap_err();
        assert!(e.to_string().contains("declares 1000"), "{e}");
        // A streamed frame without a content size: stopped at the capacity.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &zeros[..8 << 20]).unwrap();
        b.payload = enc.finish().unwrap();
        b.uncompressed_size = 1000;
        assert!(matches!(decode_batch(&b, LIMITS), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn garbage_is_malformed() {
        let recs = Records { l7: vec![L7Log::default(); 2], ..Default::default() };
        let mut b = batch(&recs);
        b.payload = b"not zstd at all".to_vec();
        assert!(matches!(decode_batch(&b, LIMITS), Err(DecodeError::Malformed { .. })));
        b.compression = Compression::None as i32;
        b.payload = vec![0xff; 40];
        let e = decode_batch(&b, LIMITS).unwrap_err();
        assert!(e.to_string().contains("not a Records message"), "{e}");
        b.compression = 9;
        assert!(decode_batch(&b, LIMITS).unwrap_err().to_string().contains("unknown compression"));
        let mut b = batch(&recs);
        b.counts = Some(fathom_proto::RecordCounts { l7: 5, ..Default::default() });
        assert!(decode_batch(&b, LIMITS).unwrap_err().to_string().contains("do not match"));
        let mut b = batch(&recs);
        b.payload = vec![1; LIMITS.max_batch_bytes + 1];
        assert!(matches!(decode_batch(&b, LIMITS), Err(DecodeError::TooLarge { .. })));
    }
}
