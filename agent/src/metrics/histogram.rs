//! A mergeable latency histogram with bounded relative error.
//!
//! Layout (log-linear, HDR-like): values below 16 get one bucket each
//! (exact); above that every power of two `[2^e, 2^(e+1))` is cut into 16
//! equal sub-buckets. A bucket's representative value is within
//! [`MAX_RELATIVE_ERROR`] (1/32, about 3.1 %) of every value in it, so any
//! quantile is within that error of the exact nearest-rank quantile.
//! Values from 2^36 µs (about 19 hours) up share the last bucket.
//!
//! Counts live in a fixed array: recording is an index computation from the
//! bit length of the value plus one increment, with no allocation. Merging
//! is element-wise addition, so histograms from many agents and windows add
//! up exactly. [`SparseHistogram`] is the wire form: non-empty buckets only.

use serde::{Deserialize, Serialize};

/// log2 of the number of sub-buckets per power of two.
pub const SUB_BUCKET_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BUCKET_BITS;
/// Highest power of two with its own sub-buckets: values >= 2^(MAX_EXPONENT+1) clamp.
const MAX_EXPONENT: u32 = 35;
/// Number of buckets.
pub const BUCKETS: usize = ((MAX_EXPONENT - SUB_BUCKET_BITS + 2) as usize) << SUB_BUCKET_BITS;
/// Largest value with a bounded error; larger values count in the last bucket.
pub const MAX_TRACKABLE: u64 = (1 << (MAX_EXPONENT + 1)) - 1;
/// Bound on |estimate - exact| / exact for every value up to [`MAX_TRACKABLE`].
pub const MAX_RELATIVE_ERROR: f64 = 1.0 / 32.0;

/// Bucket of a value.
#[inline]
pub fn bucket_index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    if v > MAX_TRACKABLE {
        return BUCKETS - 1;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BUCKET_BITS
    let sub = (v >> (e - SUB_BUCKET_BITS)) & (SUB - 1);
    (((e - SUB_BUCKET_BITS + 1) as u64) << SUB_BUCKET_BITS | sub) as usize
}

/// The values a bucket holds: `[lo, hi]`, both inclusive.
pub fn bucket_range(i: usize) -> (u64, u64) {
    let i = i.min(BUCKETS - 1) as u64;
    if i < SUB {
        return (i, i);
    }
    let e = (i >> SUB_BUCKET_BITS) as u32 + SUB_BUCKET_BITS - 1;
    let width = 1u64 << (e - SUB_BUCKET_BITS);
    let lo = (1u64 << e) + (i & (SUB - 1)) * width;
    (lo, lo + width - 1)
}

/// The value reported for a bucket: the point that minimises the worst
/// relative error over `[lo, hi]`, i.e. 2*lo*hi / (lo + hi).
pub fn bucket_value(i: usize) -> u64 {
    let (lo, hi) = bucket_range(i);
    if lo == hi {
        return lo;
    }
    let (lo, hi) = (lo as u128, hi as u128);
    ((2 * lo * hi + (lo + hi) / 2) / (lo + hi)) as u64
}

/// Latency histogram (values are microseconds by convention, any unit works).
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u32; BUCKETS],
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; BUCKETS], total: 0 }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("buckets", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.add_to_bucket(bucket_index(v), 1);
    }

    /// Record `n` observations of `v`.
    #[inline]
    pub fn record_n(&mut self, v: u64, n: u32) {
        self.add_to_bucket(bucket_index(v), n);
    }

    /// Counts saturate at u32::MAX per bucket (4e9 in one bucket of one
    /// window); `total` counts what was actually added so ranks stay consistent.
    #[inline]
    fn add_to_bucket(&mut self, i: usize, n: u32) {
        let c = &mut self.counts[i];
        let new = c.saturating_add(n);
        self.total += u64::from(new - *c);
        *c = new;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for i in 0..BUCKETS {
            self.add_to_bucket(i, other.counts[i]);
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn clear(&mut self) {
        self.counts = [0; BUCKETS];
        self.total = 0;
    }

    /// Nearest-rank quantile: the estimate of the value at rank
    /// `max(1, ceil(q * count))` in sorted order. `q` is clamped to [0, 1];
    /// an empty histogram gives 0.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = quantile_rank(q, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return bucket_value(i);
            }
        }
        bucket_value(BUCKETS - 1)
    }

    /// Non-empty buckets as (index, count), in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.counts.iter().enumerate().filter(|(_, &c)| c != 0).map(|(i, &c)| (i as u16, c))
    }

    pub fn to_sparse(&self) -> SparseHistogram {
        SparseHistogram { sub_bucket_bits: SUB_BUCKET_BITS as u8, buckets: self.iter().collect() }
    }

    /// Rebuild from the wire form; rejects another layout or an index out of range.
    pub fn from_sparse(s: &SparseHistogram) -> Result<Histogram, HistogramError> {
        if u32::from(s.sub_bucket_bits) != SUB_BUCKET_BITS {
            return Err(HistogramError::Layout(s.sub_bucket_bits));
        }
        let mut h = Histogram::new();
        for &(i, c) in &s.buckets {
            if usize::from(i) >= BUCKETS {
                return Err(HistogramError::Index(i));
            }
            h.add_to_bucket(usize::from(i), c);
        }
        Ok(h)
    }
}

/// The 1-based rank the nearest-rank quantile `q` picks among `n` values.
pub fn quantile_rank(q: f64, n: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * n as f64).ceil() as u64).clamp(1, n.max(1))
}

/// Wire form of a [`Histogram`]: the layout and the non-empty buckets as
/// `[index, count]` pairs, so a reader can merge and compute quantiles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseHistogram {
    /// Layout id: sub-buckets per power of two are 2^sub_bucket_bits.
    pub sub_bucket_bits: u8,
    pub buckets: Vec<(u16, u32)>,
}

impl SparseHistogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|&(_, c)| u64::from(c)).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramError {
    /// A histogram of another layout.
    Layout(u8),
    /// A bucket index beyond this layout.
    Index(u16),
}

impl std::fmt::Display for HistogramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistogramError::Layout(b) => write!(f, "histogram layout {b} is not {SUB_BUCKET_BITS}"),
            HistogramError::Index(i) => write!(f, "histogram bucket {i} out of range"),
        }
    }
}

impl std::error::Error for HistogramError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_contiguous_and_bounded() {
        assert_eq!(BUCKETS, 528);
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_range(i);
            assert_eq!(lo, next, "bucket {i}");
            assert!(hi >= lo);
            assert_eq!(bucket_index(lo), i);
            assert_eq!(bucket_index(hi), i);
            let v = bucket_value(i);
            assert!(v >= lo && v <= hi);
            let err = ((v - lo) as f64 / lo.max(1) as f64).max((hi - v) as f64 / hi.max(1) as f64);
            assert!(err <= MAX_RELATIVE_ERROR, "bucket {i} [{lo},{hi}] value {v} err {err}");
            next = hi + 1;
        }
        assert_eq!(next, MAX_TRACKABLE + 1);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }
}
