//! Histogram accuracy and merge, against exact sorted quantiles.

use fathom_agent::metrics::histogram::{
    bucket_index, quantile_rank, Histogram, HistogramError, SparseHistogram, BUCKETS,
    MAX_RELATIVE_ERROR, MAX_TRACKABLE,
};
use proptest::prelude::*;

const QS: [f64; 9] = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];

fn exact(sorted: &[u64], q: f64) -> u64 {
    sorted[quantile_rank(q, sorted.len() as u64) as usize - 1]
}

fn assert_close(est: u64, exact: u64, what: &str) {
    let err = (est as f64 - exact as f64).abs() / (exact.max(1) as f64);
    assert!(err <= MAX_RELATIVE_ERROR, "{what}: estimate {est} exact {exact} error {err:.4}");
}

fn check_quantiles(h: &Histogram, values: &[u64]) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    assert_eq!(h.count(), values.len() as u64);
    for q in QS {
        assert_close(h.quantile(q), exact(&sorted, q), &format!("q={q}"));
    }
}

/// Latency-like values: log-uniform from 1 µs to about an hour, plus exact small ones.
fn latency() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..40, (0.0f64..22.0).prop_map(|e| e.exp() as u64), 1u64..=MAX_TRACKABLE,]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn quantiles_within_bound(values in prop::collection::vec(latency(), 1..2000)) {
        let mut h = Histogram::new();
        for &v in &values {
            h.record(v);
        }
        check_quantiles(&h, &values);
    }

    #[test]
    fn merge_equals_recording_everything(
        a in prop::collection::vec(latency(), 0..1000),
        b in prop::collection::vec(latency(), 1..1000),
    ) {
        let (mut ha, mut hb, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for &v in &a { ha.record(v); all.record(v); }
        for &v in &b { hb.record(v); all.record(v); }
        ha.merge(&hb);
        prop_assert_eq!(&ha, &all);
        let both: Vec<u64> = a.iter().chain(&b).copied().collect();
        check_quantiles(&ha, &both);
    }

    #[test]
    fn sparse_round_trip_through_json(values in prop::collection::vec(latency(), 0..500)) {
        let mut h = Histogram::new();
        for &v in &values { h.record(v); }
        let json = serde_json::to_string(&h.to_sparse()).unwrap();
        let back: SparseHistogram = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back.count(), values.len() as u64);
        prop_assert_eq!(Histogram::from_sparse(&back).unwrap(), h);
    }
}

#[test]
fn small_values_are_exact() {
    let mut h = Histogram::new();
    for v in 0..16 {
        h.record(v);
    }
    for (i, q) in (1..=16).map(|r| (r - 1, r as f64 / 16.0)) {
        assert_eq!(h.quantile(q), i);
    }
}

#[test]
fn empty_and_degenerate() {
    let h = Histogram::new();
    assert_eq!(h.quantile(0.5), 0);
    assert!(h.is_empty());
    let mut h = Histogram::new();
    h.record(1000);
    assert_close(h.quantile(f64::NAN), 1000, "nan");
    assert_close(h.quantile(-1.0), 1000, "q<0");
    assert_close(h.quantile(2.0), 1000, "q>1");
    h.record(u64::MAX);
    assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    assert_eq!(h.count(), 2);
}

#[test]
fn record_n_and_saturation() {
    let mut h = Histogram::new();
    h.record_n(500, u32::MAX);
    h.record_n(500, 10);
    h.record(7);
    assert_eq!(h.count(), u64::from(u32::MAX) + 1, "saturated bucket stops counting");
    assert_eq!(h.quantile(0.0), 7);
    assert_close(h.quantile(1.0), 500, "max");
}

#[test]
fn sparse_wire_form() {
    let mut h = Histogram::new();
    h.record(3);
    h.record(3);
    h.record(100);
    let s = h.to_sparse();
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        format!(r#"{{"sub_bucket_bits":4,"buckets":[[3,2],[{},1]]}}"#, bucket_index(100))
    );
    let other_layout = SparseHistogram { sub_bucket_bits: 5, buckets: vec![] };
    assert_eq!(Histogram::from_sparse(&other_layout), Err(HistogramError::Layout(5)));
    let bad_index = SparseHistogram { sub_bucket_bits: 4, buckets: vec![(BUCKETS as u16, 1)] };
    assert_eq!(Histogram::from_sparse(&bad_index), Err(HistogramError::Index(BUCKETS as u16)));
}
