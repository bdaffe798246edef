//! Placement of 10K agents over N ingest nodes: time to place from scratch and after a
//! node loss or join, with the movement and balance figures printed once per N
//! (`moved` agents, `max/mean` load).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fathom_regions::{place, AgentSlot, NodeSlot, Placement, PlacementParams};

const AGENTS: usize = 10_000;

fn nodes(n: u64) -> Vec<NodeSlot> {
    (1..=n)
        .map(|id| NodeSlot {
            id,
            region: "r".into(),
            // Three AZs, so AZ scoping is part of the work.
            az: format!("az{}", id % 3),
            accepting: true,
        })
        .collect()
}

fn agents() -> Vec<AgentSlot> {
    (0..AGENTS)
        .map(|i| AgentSlot {
            id: format!("host-{i:05}.example"),
            region: "r".into(),
            az: format!("az{}", i % 3),
            current: None,
        })
        .collect()
}

fn settle(ags: &mut [AgentSlot], p: &Placement) {
    for (a, n) in ags.iter_mut().zip(&p.assignment) {
        a.current = *n;
    }
}

fn balance(p: &Placement, nodes: usize) -> (usize, f64) {
    let max = p.loads().values().copied().max().unwrap_or(0);
    (max, max as f64 / (AGENTS as f64 / nodes as f64))
}

fn bench(c: &mut Criterion) {
    let params = PlacementParams::default();
    let mut g = c.benchmark_group("place_10k_agents");
    g.sample_size(20);
    for n in [3u64, 12, 48, 192] {
        let ns = nodes(n);
        let fresh = agents();
        let p0 = place(&fresh, &ns, &params);
        let mut settled = fresh.clone();
        settle(&mut settled, &p0);
        let mut lost = ns.clone();
        lost.remove(0);
        let mut joined = ns.clone();
        joined.push(NodeSlot { id: 10_000, region: "r".into(), az: "az0".into(), accepting: true });
        let pl = place(&settled, &lost, &params);
        let pj = place(&settled, &joined, &params);
        let (m0, r0) = balance(&p0, ns.len());
        let (ml, rl) = balance(&pl, lost.len());
        let (mj, rj) = balance(&pj, joined.len());
        let on_lost = settled.iter().filter(|a| a.current == Some(1)).count();
        let to_new = pj.assignment.iter().filter(|a| **a == Some(10_000)).count();
        eprintln!(
            "nodes={n}: fresh max={m0} max/mean={r0:.3} | loss: moved={} (on lost node {on_lost}) \
             max/mean={rl:.3} (max {ml}) | join: moved={} (to new node {to_new}) max/mean={rj:.3} (max {mj})",
            pl.moved, pj.moved
        );
        g.bench_with_input(BenchmarkId::new("fresh", n), &n, |b, _| {
            b.iter(|| place(&fresh, &ns, &params))
        });
        g.bench_with_input(BenchmarkId::new("node_loss", n), &n, |b, _| {
            b.iter(|| place(&settled, &lost, &params))
        });
        g.bench_with_input(BenchmarkId::new("node_join", n), &n, |b, _| {
            b.iter(|| place(&settled, &joined, &params))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
