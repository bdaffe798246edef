//! Bounded in-order reassembly of one direction of a TCP stream.
//!
//! Contiguous bytes go straight to the consumer; segments above the next
//! expected sequence number wait in a small buffer. When the buffer is full,
//! its bytes have waited too long, or the stream ends, the hole is given up:
//! the consumer is told how many bytes are missing and delivery resumes at
//! the first buffered segment. Bytes already delivered are never delivered
//! again. All sequence arithmetic is modulo 2^32.

/// Signed distance from `b` to `a` in sequence space.
pub fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

#[derive(Clone, Copy, Debug)]
pub struct ReasmLimits {
    pub max_segments: usize,
    pub max_bytes: usize,
    /// Bytes all buffers of an engine may hold together.
    pub max_total_bytes: usize,
}

/// Engine-wide reassembly counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReasmCounters {
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Times a full buffer forced a hole to be given up.
    pub overflows: u64,
    /// Bytes held in all buffers now.
    pub buffered_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegClass {
    InOrder,
    /// Entirely or partly below the next expected byte, or a repeat of a
    /// buffered segment.
    Retransmission,
    /// Above the next expected byte.
    OutOfOrder,
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    seq: u32,
    off: u32,
    /// Captured bytes kept.
    cap: u32,
    /// Bytes on the wire.
    wire: u32,
}

#[derive(Default)]
struct Pending {
    segs: Vec<Seg>,
    data: Vec<u8>,
    live: usize,
    since_us: u64,
}

/// One direction's stream state. Small when nothing waits: the buffer is
/// allocated on the first out-of-order segment and freed once drained.
#[derive(Default)]
pub struct Stream {
    next: u32,
    known: bool,
    pending: Option<Box<Pending>>,
}

/// Receives in-order bytes: (seq of data[0], data, bytes missing after data).
/// An empty `data` with `missing > 0` is a hole given up.
pub trait Consumer {
    fn bytes(&mut self, seq: u32, data: &[u8], missing: u64);
}

impl<F: FnMut(u32, &[u8], u64)> Consumer for F {
    fn bytes(&mut self, seq: u32, data: &[u8], missing: u64) {
        self(seq, data, missing)
    }
}

impl Stream {
    /// Start (or restart, on a SYN) the stream at `next`.
    pub fn init(&mut self, next: u32) {
        self.next = next;
        self.known = true;
    }

    pub fn is_known(&self) -> bool {
        self.known
    }

    pub fn next_seq(&self) -> u32 {
        self.next
    }

    pub fn has_pending(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| !p.segs.is_empty())
    }

    /// True when buffered bytes have waited since before `now - timeout`.
    pub fn stale(&self, now_us: u64, timeout_us: u64) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| !p.segs.is_empty() && now_us.saturating_sub(p.since_us) >= timeout_us)
    }

    /// Take a segment of `wire` bytes at `seq` of which `data` was captured.
    /// `keep` says whether out-of-order bytes are worth buffering (a flow
    /// with no L7 parser only needs the sequence bookkeeping).
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        seq: u32,
        data: &[u8],
        wire: u32,
        now_us: u64,
        keep: bool,
        lim: &ReasmLimits,
        ctr: &mut ReasmCounters,
        out: &mut impl Consumer,
    ) -> SegClass {
        let wire = wire.max(data.len() as u32);
        if wire == 0 {
            return SegClass::InOrder;
        }
        if !self.known {
            self.init(seq);
        }
        let rel = seq_diff(seq, self.next);
        if rel <= 0 {
            if seq_diff(seq.wrapping_add(wire), self.next) <= 0 {
                return SegClass::Retransmission;
            }
            self.take(seq, data, wire, ctr, out);
            return if rel < 0 { SegClass::Retransmission } else { SegClass::InOrder };
        }
        let cap = if keep { data.len() } else { 0 };
        let p = self.pending.get_or_insert_with(Default::default);
        if p.segs.iter().any(|s| s.seq == seq) {
            return SegClass::Retransmission;
        }
        // Make room by giving up holes, oldest first.
        while self.pending.as_ref().is_some_and(|p| {
            !p.segs.is_empty()
                && (p.segs.len() >= lim.max_segments
                    || p.live + cap > lim.max_bytes
                    || ctr.buffered_bytes + cap > lim.max_total_bytes)
        }) {
            ctr.overflows += 1;
            self.skip_hole(ctr, out);
            if seq_diff(seq, self.next) <= 0 {
                // The skip reached this segment: it is in order now.
                if seq_diff(seq.wrapping_add(wire), self.next) > 0 {
                    self.take(seq, data, wire, ctr, out);
                }
                return SegClass::OutOfOrder;
            }
        }
        let p = self.pending.get_or_insert_with(Default::default);
        if cap > lim.max_bytes || ctr.buffered_bytes + cap > lim.max_total_bytes {
            // Can never be buffered: give up the hole before it now.
            ctr.overflows += 1;
            let gap = seq_diff(seq, self.next) as u64;
            self.hole(gap, ctr, out);
            self.take(seq, data, wire, ctr, out);
            return SegClass::OutOfOrder;
        }
        if p.data.len() + cap > lim.max_bytes {
            compact(p, self.next);
        }
        let off = p.data.len() as u32;
        p.data.extend_from_slice(&data[..cap]);
        p.live += cap;
        ctr.buffered_bytes += cap;
        if p.segs.is_empty() {
            p.since_us = now_us;
        }
        let next = self.next;
        let at = p.segs.partition_point(|s| seq_diff(s.seq, next) < rel);
        p.segs.insert(at, Seg { seq, off, cap: cap as u32, wire });
        SegClass::OutOfOrder
    }

    /// Give up every hole: deliver all buffered bytes (stream end, timeout).
    pub fn flush(&mut self, ctr: &mut ReasmCounters, out: &mut impl Consumer) {
        while self.has_pending() {
            self.skip_hole(ctr, out);
        }
        self.release(ctr);
    }

    /// Deliver an in-order (or overlapping) segment, then what it unblocked.
    fn take(
        &mut self,
        seq: u32,
        data: &[u8],
        wire: u32,
        ctr: &mut ReasmCounters,
        out: &mut impl Consumer,
    ) {
        emit(self.next, seq, data, wire, out);
        self.next = seq.wrapping_add(wire);
        self.drain(ctr, out);
    }

    fn hole(&mut self, gap: u64, ctr: &mut ReasmCounters, out: &mut impl Consumer) {
        ctr.gaps += 1;
        ctr.gap_bytes += gap;
        out.bytes(self.next, &[], gap);
        self.next = self.next.wrapping_add(gap as u32);
    }

    fn skip_hole(&mut self, ctr: &mut ReasmCounters, out: &mut impl Consumer) {
        let Some(first) = self.pending.as_ref().and_then(|p| p.segs.first().copied()) else {
            return;
        };
        let gap = seq_diff(first.seq, self.next);
        if gap > 0 {
            self.hole(gap as u64, ctr, out);
        }
        self.drain(ctr, out);
    }

    /// Deliver buffered segments that now start at or below `next`.
    fn drain(&mut self, ctr: &mut ReasmCounters, out: &mut impl Consumer) {
        let Some(p) = self.pending.as_mut() else { return };
        while let Some(&s) = p.segs.first() {
            if seq_diff(s.seq, self.next) > 0 {
                break;
            }
            p.segs.remove(0);
            p.live -= s.cap as usize;
            ctr.buffered_bytes -= s.cap as usize;
            let end = s.seq.wrapping_add(s.wire);
            if seq_diff(end, self.next) > 0 {
                let data = &p.data[s.off as usize..(s.off + s.cap) as usize];
                emit(self.next, s.seq, data, s.wire, out);
                self.next = end;
            }
        }
        self.release(ctr);
    }

    /// Free the buffer once empty, so idle flows stay small.
    fn release(&mut self, ctr: &mut ReasmCounters) {
        if let Some(p) = &self.pending {
            if p.segs.is_empty() {
                ctr.buffered_bytes -= p.live;
                self.pending = None;
            }
        }
    }

    /// Bytes this stream holds in its buffer.
    pub fn buffered(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.live)
    }
}

/// Deliver the part of a segment at `seq` beyond `next`.
fn emit(next: u32, seq: u32, data: &[u8], wire: u32, out: &mut impl Consumer) {
    let done = seq_diff(next, seq).max(0) as u32;
    let fresh = data.get(done as usize..).unwrap_or(&[]);
    let missing = u64::from(wire.saturating_sub(done)).saturating_sub(fresh.len() as u64);
    out.bytes(next, fresh, missing);
}

/// Move live segments to the front of the data buffer.
fn compact(p: &mut Pending, next: u32) {
    p.segs.sort_unstable_by_key(|s| s.off);
    let mut w = 0u32;
    for s in p.segs.iter_mut() {
        p.data.copy_within(s.off as usize..(s.off + s.cap) as usize, w as usize);
        s.off = w;
        w += s.cap;
    }
    p.data.truncate(w as usize);
    p.segs.sort_unstable_by_key(|s| s.seq.wrapping_sub(next));
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: ReasmLimits =
        ReasmLimits { max_segments: 4, max_bytes: 64, max_total_bytes: 1 << 20 };

    struct Out(Vec<u8>, u64);
    impl Consumer for Out {
        fn bytes(&mut self, _seq: u32, data: &[u8], missing: u64) {
            self.0.extend_from_slice(data);
            self.0.extend(std::iter::repeat_n(b'?', missing as usize));
            self.1 += missing;
        }
    }

    fn run(segs: &[(u32, &[u8])], start: u32) -> (Out, ReasmCounters, Vec<SegClass>) {
        let mut s = Stream::default();
        s.init(start);
        let mut c = ReasmCounters::default();
        let mut o = Out(Vec::new(), 0);
        let cls = segs
            .iter()
            .map(|&(q, d)| s.segment(q, d, d.len() as u32, 0, true, &LIM, &mut c, &mut o))
            .collect();
        s.flush(&mut c, &mut o);
        assert_eq!(c.buffered_bytes, 0);
        (o, c, cls)
    }

    #[test]
    fn out_of_order_and_retransmission_across_wrap() {
        let b = u32::MAX - 3;
        let (o, c, cls) = run(
            &[
                (b, b"ab"),
                (b.wrapping_add(4), b"ef"),
                (b.wrapping_add(2), b"cd"),
                (b, b"ab"),
                (b.wrapping_add(3), b"dEFg"),
            ],
            b,
        );
        assert_eq!(o.0, b"abcdefg");
        assert_eq!(c.gaps, 0);
        use SegClass::*;
        assert_eq!(cls, [InOrder, OutOfOrder, InOrder, Retransmission, Retransmission]);
    }

    #[test]
    fn hole_given_up_on_overflow() {
        // Bytes 2..4 never come; the buffer holds 4 segments.
        let (o, c, _) =
            run(&[(0, b"ab"), (4, b"e"), (5, b"f"), (6, b"g"), (7, b"h"), (8, b"i"), (9, b"j")], 0);
        assert_eq!(o.0, b"ab??efghij");
        assert_eq!((c.gaps, c.gap_bytes, c.overflows), (1, 2, 1));
    }

    #[test]
    fn flush_reports_trailing_holes() {
        let (o, c, _) = run(&[(10, b"xy"), (14, b"z")], 10);
        assert_eq!(o.0, b"xy??z");
        assert_eq!(c.gaps, 1);
    }

    #[test]
    fn compaction_keeps_order() {
        let mut s = Stream::default();
        s.init(0);
        let mut c = ReasmCounters::default();
        let mut o = Out(Vec::new(), 0);
        let lim = ReasmLimits { max_segments: 8, max_bytes: 8, max_total_bytes: 100 };
        s.segment(3, b"def", 3, 0, true, &lim, &mut c, &mut o);
        s.segment(9, b"jkl", 3, 0, true, &lim, &mut c, &mut o);
        s.segment(0, b"abc", 3, 0, true, &lim, &mut c, &mut o);
        assert_eq!(o.0, b"abcdef");
        // 3 live bytes, 6 used: appending 3 more needs compaction.
        s.segment(12, b"mno", 3, 0, true, &lim, &mut c, &mut o);
        assert_eq!(s.buffered(), 6);
        s.segment(6, b"ghi", 3, 0, true, &lim, &mut c, &mut o);
        assert_eq!(o.0, b"abcdefghijklmno");
        assert_eq!((c.gaps, c.overflows, c.buffered_bytes), (0, 0, 0));
    }
}
