//! RED and network aggregation: counting rules, window boundaries,
//! lateness, the 1 s -> 1 min fold, overflow and bounds.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use fathom_agent::metrics::histogram::{quantile_rank, Histogram, MAX_RELATIVE_ERROR};
use fathom_agent::metrics::red::OVERFLOW_ENDPOINT;
use fathom_agent::metrics::{
    NetworkAggregator, NetworkMetric, RedAggregator, RedMetric, RedValues, WindowConfig,
};
use fathom_agent::records::*;
use proptest::prelude::*;

const S: u64 = 1_000_000;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn tuple(server: u8, port: u16) -> FlowTuple {
    FlowTuple {
        client_ip: ip(1),
        client_port: 40_000,
        server_ip: ip(server),
        server_port: port,
        protocol: L4Protocol::Tcp,
    }
}

fn call(endpoint: &str, msg_type: &str, status: &str, start_us: u64, latency_us: u64) -> L7Log {
    L7Log {
        flow: tuple(2, 80),
        source: CaptureSource::Packet,
        observation_point: Default::default(),
        interface: None,
        process: None,
        start_time_us: start_us,
        end_time_us: start_us + latency_us,
        latency_us,
        call: L7Fields {
            l7_protocol: "HTTP".into(),
            msg_type: msg_type.into(),
            endpoint: endpoint.into(),
            response_status: status.into(),
            response_code: (msg_type != "request" && status != "timeout").then_some(200),
            ..Default::default()
        },
        syscall_trace_id_request: None,
        syscall_trace_id_response: None,
        req_tcp_seq: None,
        resp_tcp_seq: None,
    }
}

fn ok(endpoint: &str, start_us: u64, latency_us: u64) -> L7Log {
    call(endpoint, "session", "ok", start_us, latency_us)
}

fn find<'a>(rows: &'a [RedMetric], g: Granularity, t: u64, ep: &str) -> &'a RedMetric {
    rows.iter()
        .find(|r| r.granularity == g && r.time_s == t && r.endpoint == ep)
        .unwrap_or_else(|| panic!("no {g:?} row at {t} for {ep} in {rows:#?}"))
}

#[test]
fn counting_rules() {
    let mut a = RedAggregator::new();
    let t = 100 * S;
    a.observe(&ok("/a", t, 100));
    a.observe(&call("/a", "session", "client_error", t, 300));
    a.observe(&call("/a", "session", "server_error", t, 200));
    a.observe(&call("/a", "session", "timeout", t, 0));
    a.observe(&call("/a", "session", "parse_failed", t, 0));
    a.observe(&call("/a", "request", "unknown", t, 0));
    a.observe(&call("/a", "response", "server_error", t, 0));
    // A request without a response by protocol rule (e.g. COM_QUIT): no code, no length.
    let mut quit = call("/a", "session", "unknown", t, 0);
    quit.call.response_code = None;
    a.observe(&quit);
    let rows = a.flush_all();
    let r = find(&rows, Granularity::Second, 100, "/a");
    assert_eq!(
        r.values,
        RedValues {
            requests: 7,
            responses: 4,
            client_errors: 1,
            server_errors: 2,
            timeouts: 1,
            latency_sum_us: 600,
            latency_max_us: 300,
            latency_count: 3,
        }
    );
    assert_eq!(r.histogram.count(), 3);
    assert_eq!(r.server_ip, ip(2));
    assert_eq!(r.server_port, 80);
    assert_eq!(r.l7_protocol, "HTTP");
    assert_eq!(r.process_name, None);
    let m = find(&rows, Granularity::Minute, 60, "/a");
    assert_eq!(m.values, r.values);
    assert_eq!(m.histogram, r.histogram);
    assert_eq!(rows.len(), 2);
}

#[test]
fn key_fields_separate_rows() {
    let mut a = RedAggregator::new();
    let t = 10 * S;
    let base = ok("/a", t, 10);
    let mut other_port = base.clone();
    other_port.flow.server_port = 8080;
    let mut other_ip = base.clone();
    other_ip.flow.server_ip = ip(3);
    let mut with_proc = base.clone();
    with_proc.process = Some(ProcessRef { pid: 7, tid: 7, name: "nginx".into() });
    let mut empty_proc = base.clone();
    empty_proc.process = Some(ProcessRef { pid: 8, tid: 8, name: String::new() });
    let mut other_proto = base.clone();
    other_proto.call.l7_protocol = "HTTP2".into();
    let mut other_client = base.clone();
    other_client.flow.client_ip = ip(99);
    for l in [&base, &other_port, &other_ip, &with_proc, &empty_proc, &other_proto, &other_client] {
        a.observe(l);
    }
    a.observe(&ok("/b", t, 10));
    let secs: Vec<_> =
        a.flush_all().into_iter().filter(|r| r.granularity == Granularity::Second).collect();
    // base, empty process name and another client share a row.
    assert_eq!(secs.len(), 6, "{secs:#?}");
    let base_row = secs
        .iter()
        .find(|r| {
            r.endpoint == "/a"
                && r.server_port == 80
                && r.server_ip == ip(2)
                && r.process_name.is_none()
                && r.l7_protocol == "HTTP"
        })
        .unwrap();
    assert_eq!(base_row.values.requests, 3);
    assert!(secs.iter().any(|r| r.process_name.as_deref() == Some("nginx")));
}

#[test]
fn window_boundaries_and_lateness() {
    let mut a = RedAggregator::new();
    a.observe(&ok("/a", 10 * S - 1, 5)); // last µs of second 9
    a.observe(&ok("/a", 10 * S, 5)); // first µs of second 10
    a.observe(&ok("/a", 11 * S - 1, 5));
    // Window [9, 10) completes at 10 s + 2 s lateness.
    assert!(a.flush(12 * S - 1).is_empty());
    let rows = a.flush(12 * S);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].time_s, rows[0].values.requests), (9, 1));
    // A late record for second 9 still counts in its minute.
    a.observe(&ok("/a", 9 * S + 500, 5));
    assert!(a.flush(13 * S - 1).is_empty());
    let rows = a.flush(13 * S);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].time_s, rows[0].values.requests), (10, 2));
    // A record for a future second waits for its window.
    a.observe(&ok("/a", 30 * S, 5));
    assert!(a.flush(32 * S).is_empty());
    assert_eq!(a.flush(33 * S)[0].time_s, 30);
    // Minute [0, 60) completes at 60 s + 10 s lateness.
    assert!(a.flush(70 * S - 1).iter().all(|r| r.granularity == Granularity::Second));
    let rows = a.flush(70 * S);
    assert_eq!(rows.len(), 1);
    let m = &rows[0];
    assert_eq!((m.granularity, m.time_s, m.values.requests), (Granularity::Minute, 0, 5));
    // Too late for both granularities: dropped and counted.
    a.observe(&ok("/a", 59 * S, 5));
    assert_eq!(a.stats().late_dropped, 1);
    // Late for the second but in time for minute 60.
    a.observe(&ok("/a", 60 * S, 5));
    let rows = a.flush_all();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].granularity, rows[0].time_s), (Granularity::Minute, 60));
    let st = a.stats();
    assert_eq!(st.observed, 7);
    assert_eq!(st.rows_emitted, 5);
    assert_eq!(st.live_keys, 0);
}

#[test]
fn overflow_key_beyond_the_bound() {
    let cfg = WindowConfig { max_keys_per_window: 3, ..Default::default() };
    let mut a = RedAggregator::with_config(&cfg);
    for i in 0..10 {
        a.observe(&ok(&format!("/{}", i % 5), 5 * S, 10 + i));
    }
    let rows = a.flush_all();
    let secs: Vec<_> = rows.iter().filter(|r| r.granularity == Granularity::Second).collect();
    assert_eq!(secs.len(), 4);
    for ep in ["/0", "/1", "/2"] {
        assert_eq!(find(&rows, Granularity::Second, 5, ep).values.requests, 2);
    }
    let o = find(&rows, Granularity::Second, 5, OVERFLOW_ENDPOINT);
    assert_eq!(o.values.requests, 4);
    assert_eq!(o.values.latency_count, 4);
    assert_eq!(o.server_port, 0);
    assert_eq!(a.stats().overflowed, 4);
    // The minute holds the same four rows.
    let mins = rows.iter().filter(|r| r.granularity == Granularity::Minute).count();
    assert_eq!(mins, 4);
    assert_eq!(find(&rows, Granularity::Minute, 0, OVERFLOW_ENDPOINT).values.requests, 4);
}

#[test]
fn live_key_bound_spans_windows() {
    let cfg = WindowConfig { max_live_keys: 4, ..Default::default() };
    let mut a = RedAggregator::with_config(&cfg);
    for sec in 0..3 {
        for ep in ["/a", "/b", "/c"] {
            a.observe(&ok(ep, sec * S, 1));
        }
    }
    let st = a.stats();
    assert_eq!(st.overflowed, 5, "second 0 takes 3 keys, second 1 one more, the rest overflow");
    assert!(st.live_keys <= 4 + 3, "one overflow key per window at most");
    let total: u64 = a
        .flush_all()
        .iter()
        .filter(|r| r.granularity == Granularity::Second)
        .map(|r| r.values.requests)
        .sum();
    assert_eq!(total, 9, "nothing lost, only folded");
}

#[test]
fn too_many_open_windows() {
    let cfg = WindowConfig { max_second_windows: 4, ..Default::default() };
    let mut a = RedAggregator::with_config(&cfg);
    for sec in 0..6 {
        a.observe(&ok("/a", sec * S, 1));
    }
    assert_eq!(a.stats().window_dropped, 2);
    let secs = a.flush_all().into_iter().filter(|r| r.granularity == Granularity::Second).count();
    assert_eq!(secs, 4);
}

#[test]
fn rows_serialize_flat() {
    let mut a = RedAggregator::new();
    a.observe(&ok("/a", 3 * S, 1234));
    let rows = a.flush_all();
    let v = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(v["time_s"], 3);
    assert_eq!(v["granularity"], "1s");
    assert_eq!(v["endpoint"], "/a");
    assert_eq!(v["requests"], 1);
    assert_eq!(v["latency_max_us"], 1234);
    assert_eq!(v["histogram"]["sub_bucket_bits"], 4);
    assert_eq!(v["histogram"]["buckets"].as_array().unwrap().len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With flushes interleaved at a moving clock, nothing is lost or double
    /// counted: per key and minute, the 1 min row equals the sum of its 1 s
    /// rows, and both equal the input.
    #[test]
    fn seconds_fold_into_minutes(
        recs in prop::collection::vec((0u64..180 * S, 0usize..4, 0u64..100_000, 0u8..4), 1..400),
    ) {
        let mut sorted = recs.clone();
        sorted.sort_by_key(|r| r.0);
        let statuses = ["ok", "client_error", "server_error", "timeout"];
        let mut a = RedAggregator::new();
        let mut rows = Vec::new();
        let mut expect: HashMap<(u64, usize), (u64, u64, Vec<u64>)> = HashMap::new();
        for &(t, ep, lat, st) in &sorted {
            let l = call(&format!("/{ep}"), "session", statuses[st as usize], t, lat);
            a.observe(&l);
            let e = expect.entry((t / S / 60 * 60, ep)).or_default();
            e.0 += 1;
            if st != 3 {
                e.1 += lat;
                e.2.push(lat);
            }
            // Records arrive in time order; the clock runs 1 s behind them.
            rows.extend(a.flush(t.saturating_sub(S)));
        }
        rows.extend(a.flush_all());
        prop_assert_eq!(a.stats().late_dropped, 0);
        let mut secs: HashMap<(u64, String), (RedValues, Histogram)> = HashMap::new();
        let mut mins: HashMap<(u64, String), &RedMetric> = HashMap::new();
        for r in &rows {
            match r.granularity {
                Granularity::Second => {
                    let s = secs.entry((r.time_s / 60 * 60, r.endpoint.clone())).or_default();
                    s.0.requests += r.values.requests;
                    s.0.latency_sum_us += r.values.latency_sum_us;
                    s.0.latency_count += r.values.latency_count;
                    s.1.merge(&Histogram::from_sparse(&r.histogram).unwrap());
                }
                Granularity::Minute => {
                    prop_assert!(mins.insert((r.time_s, r.endpoint.clone()), r).is_none());
                }
            }
        }
        prop_assert_eq!(mins.len(), expect.len());
        for ((minute, ep), (reqs, lat_sum, mut lats)) in expect {
            let key = (minute, format!("/{ep}"));
            let m = mins[&key];
            let s = &secs[&key];
            prop_assert_eq!(m.values.requests, reqs);
            prop_assert_eq!(s.0.requests, reqs);
            prop_assert_eq!(m.values.latency_sum_us, lat_sum);
            prop_assert_eq!(s.0.latency_sum_us, lat_sum);
            prop_assert_eq!(m.values.latency_count, lats.len() as u64);
            prop_assert_eq!(&Histogram::from_sparse(&m.histogram).unwrap(), &s.1);
            if !lats.is_empty() {
                lats.sort_unstable();
                let exact = lats[quantile_rank(0.5, lats.len() as u64) as usize - 1];
                let est = Histogram::from_sparse(&m.histogram).unwrap().quantile(0.5);
                let err = (est as f64 - exact as f64).abs() / exact.max(1) as f64;
                prop_assert!(err <= MAX_RELATIVE_ERROR, "median {} vs {}", est, exact);
            }
        }
    }
}

// ---- network ----

fn l4(start_us: u64, end_us: u64, duration_us: u64, close: CloseType) -> L4Flow {
    L4Flow {
        flow: tuple(2, 443),
        source: CaptureSource::Packet,
        interface: None,
        start_time_us: start_us,
        end_time_us: end_us,
        duration_us,
        tx: DirectionCounters {
            bytes: 1000,
            packets: 10,
            retransmissions: 1,
            zero_windows: 0,
            ..Default::default()
        },
        rx: DirectionCounters { bytes: 5000, packets: 8, zero_windows: 2, ..Default::default() },
        syn_ack: 0,
        rtt_server_us: None,
        rtt_client_us: None,
        close_type: close,
        l7_protocol: None,
        client_process: None,
        server_process: None,
    }
}

fn net_row(rows: &[NetworkMetric], g: Granularity, t: u64) -> &NetworkMetric {
    rows.iter().find(|r| r.granularity == g && r.time_s == t).unwrap()
}

#[test]
fn network_deltas_of_a_long_flow() {
    let mut a = NetworkAggregator::new();
    // A flow from 100 s: periodic records at 160 s and 220 s, reset by the client at 230.5 s.
    let mut first = l4(100 * S, 160 * S, 60 * S, CloseType::Open);
    first.rtt_client_us = Some(300);
    first.rtt_server_us = Some(700);
    first.syn_ack = 1;
    a.observe(&first);
    a.observe(&l4(160 * S, 220 * S, 120 * S, CloseType::Open));
    a.observe(&l4(220 * S, 230 * S + 500_000, 130 * S + 500_000, CloseType::ClientReset));
    // A short flow, closed normally in second 230, on the same key.
    let mut short = l4(230 * S, 230 * S + 20_000, 20_000, CloseType::Fin);
    short.rtt_client_us = Some(100);
    a.observe(&short);
    let rows = a.flush_all();
    let r160 = net_row(&rows, Granularity::Second, 160);
    assert_eq!(r160.values.new_flows, 1);
    assert_eq!(r160.values.closed_flows, 0);
    assert_eq!(
        (r160.values.rtt_sum_us, r160.values.rtt_count, r160.values.rtt_max_us),
        (1000, 1, 1000)
    );
    assert_eq!(r160.values.bytes_tx, 1000);
    let r220 = net_row(&rows, Granularity::Second, 220);
    assert_eq!((r220.values.new_flows, r220.values.closed_flows, r220.values.rtt_count), (0, 0, 0));
    let r230 = net_row(&rows, Granularity::Second, 230);
    assert_eq!(r230.values.new_flows, 1, "the short flow");
    assert_eq!(r230.values.closed_flows, 2);
    assert_eq!(r230.values.client_resets, 1);
    assert_eq!(r230.values.server_resets, 0);
    assert_eq!(r230.values.bytes_tx, 2000);
    assert_eq!(r230.values.bytes_rx, 10_000);
    assert_eq!(r230.values.packets_tx, 20);
    assert_eq!(r230.values.packets_rx, 16);
    assert_eq!(r230.values.retransmissions_tx, 2);
    assert_eq!(r230.values.zero_windows_rx, 4);
    assert_eq!(r230.values.rtt_count, 0, "client side alone is not a full RTT");
    assert_eq!((r230.values.rtt_client_sum_us, r230.values.rtt_client_count), (100, 1));
    let m = net_row(&rows, Granularity::Minute, 120);
    assert_eq!(m.values.new_flows, 1);
    assert_eq!(m.values.bytes_tx, 1000);
    let m = net_row(&rows, Granularity::Minute, 180);
    assert_eq!(m.values.bytes_tx, 3000);
    assert_eq!(m.values.closed_flows, 2);
    assert_eq!(m.server_port, 443);
    assert_eq!(m.l4_protocol, L4Protocol::Tcp);
    assert_eq!(rows.len(), 3 + 2);
}

#[test]
fn network_keys_and_windows() {
    let mut a = NetworkAggregator::new();
    let mut http = l4(5 * S, 5 * S + 10, 10, CloseType::Fin);
    http.l7_protocol = Some("HTTP".into());
    let mut udp = l4(5 * S, 5 * S + 10, 10, CloseType::Fin);
    udp.flow.protocol = L4Protocol::Udp;
    let mut other_client = l4(5 * S, 5 * S + 10, 10, CloseType::Fin);
    other_client.flow.client_ip = ip(77);
    other_client.flow.client_port = 1;
    a.observe(&l4(5 * S, 5 * S + 10, 10, CloseType::Fin));
    a.observe(&http);
    a.observe(&udp);
    a.observe(&other_client);
    assert!(a.flush(8 * S - 1).is_empty());
    let rows = a.flush(8 * S);
    assert_eq!(rows.len(), 3);
    let plain =
        rows.iter().find(|r| r.l7_protocol.is_none() && r.l4_protocol == L4Protocol::Tcp).unwrap();
    assert_eq!(plain.values.new_flows, 2);
    let v = serde_json::to_value(plain).unwrap();
    assert_eq!(v["l4_protocol"], "tcp");
    assert_eq!(v["bytes_tx"], 2000);
    assert_eq!(v["granularity"], "1s");
    let cfg = WindowConfig { max_keys_per_window: 1, ..Default::default() };
    let mut b = NetworkAggregator::with_config(&cfg);
    b.observe(&http);
    b.observe(&udp);
    let rows = b.flush_all();
    assert!(rows.iter().any(|r| r.l7_protocol.as_deref() == Some(OVERFLOW_ENDPOINT)));
    assert_eq!(b.stats().overflowed, 1);
    let mins: Vec<_> = rows.iter().filter(|r| r.granularity == Granularity::Minute).collect();
    assert_eq!(mins.len(), 2, "the minute keeps the same key and overflow row");
}
