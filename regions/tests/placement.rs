//! Properties of placement: bounded loads, AZ locality, and minimal movement when a node
//! is lost or joins.

use std::collections::HashMap;

use fathom_regions::{place, AgentSlot, NodeSlot, Placement, PlacementParams};
use proptest::prelude::*;

fn nodes(azs: &[(&str, &str, u64)]) -> Vec<NodeSlot> {
    let mut out = Vec::new();
    let mut id = 1;
    for (region, az, count) in azs {
        for _ in 0..*count {
            out.push(NodeSlot {
                id,
                region: region.to_string(),
                az: az.to_string(),
                accepting: true,
            });
            id += 1;
        }
    }
    out
}

fn agents(count: usize, azs: &[(&str, &str)], salt: u32) -> Vec<AgentSlot> {
    (0..count)
        .map(|i| {
            let (region, az) = azs[i % azs.len()];
            AgentSlot {
                id: format!("agent-{salt}-{i}"),
                region: region.into(),
                az: az.into(),
                current: None,
            }
        })
        .collect()
}

fn apply(agents: &mut [AgentSlot], p: &Placement) {
    for (a, n) in agents.iter_mut().zip(&p.assignment) {
        a.current = *n;
    }
}

fn bound(c: f64, m: usize, n: usize) -> usize {
    (c * m as f64 / n as f64 - 1e-9).ceil() as usize
}

fn max_load(p: &Placement) -> usize {
    p.loads().values().copied().max().unwrap_or(0)
}

const C: f64 = 1.25;

fn params() -> PlacementParams {
    PlacementParams { load_factor: C, vnodes: 64 }
}

/// One AZ, `n` nodes, `m` agents, placed from scratch: the stable starting point.
fn settled(m: usize, n: u64, salt: u32) -> (Vec<AgentSlot>, Vec<NodeSlot>) {
    let ns = nodes(&[("r", "a", n)]);
    let mut ags = agents(m, &[("r", "a")], salt);
    let p = place(&ags, &ns, &params());
    apply(&mut ags, &p);
    (ags, ns)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn loads_stay_within_c_times_the_mean(m in 1usize..600, n in 1u64..12, salt in any::<u32>()) {
        let (ags, _) = settled(m, n, salt);
        assert!(ags.iter().all(|a| a.current.is_some()));
        let p = Placement { assignment: ags.iter().map(|a| a.current).collect(), moved: 0 };
        prop_assert!(max_load(&p) <= bound(C, m, n as usize), "max {} > bound {}", max_load(&p), bound(C, m, n as usize));
    }

    #[test]
    fn placing_again_moves_nothing(m in 1usize..600, n in 1u64..12, salt in any::<u32>()) {
        let (ags, ns) = settled(m, n, salt);
        let again = place(&ags, &ns, &params());
        prop_assert_eq!(again.moved, 0);
    }

    #[test]
    fn a_lost_node_moves_only_its_own_agents(
        m in 1usize..600, n in 2u64..12, lost in any::<prop::sample::Index>(), salt in any::<u32>(),
        drained in any::<bool>(),
    ) {
        let (ags, mut ns) = settled(m, n, salt);
        let lost = lost.index(ns.len());
        let lost_id = ns[lost].id;
        if drained {
            ns[lost].accepting = false;
        } else {
            ns.remove(lost);
        }
        let p = place(&ags, &ns, &params());
        for (a, now) in ags.iter().zip(&p.assignment) {
            if a.current != *now {
                prop_assert_eq!(a.current, Some(lost_id), "agent {} moved off a live node", a.id);
            }
            prop_assert!(now.is_some() && *now != Some(lost_id));
        }
        let on_lost = ags.iter().filter(|a| a.current == Some(lost_id)).count();
        prop_assert_eq!(p.moved, on_lost);
        prop_assert!(max_load(&p) <= bound(C, m, n as usize - 1));
    }

    #[test]
    fn a_joined_node_takes_about_its_share(m in 50usize..600, n in 1u64..12, salt in any::<u32>()) {
        let (ags, mut ns) = settled(m, n, salt);
        let new_id = 1000;
        ns.push(NodeSlot { id: new_id, region: "r".into(), az: "a".into(), accepting: true });
        let p = place(&ags, &ns, &params());
        let share = m / (n as usize + 1);
        let to_new = p.assignment.iter().filter(|a| **a == Some(new_id)).count();
        // It fills up to its share (when enough agents prefer it), never beyond its bound,
        // and the agents that move elsewhere are only those shed by nodes over their
        // (now smaller) bound.
        prop_assert!(to_new <= bound(C, m, n as usize + 1));
        prop_assert!(p.moved <= to_new + (bound(C, m, n as usize) - bound(C, m, n as usize + 1) + 1) * n as usize);
        prop_assert!(p.moved <= 2 * share + n as usize + 2, "moved {} for share {}", p.moved, share);
        prop_assert!(max_load(&p) <= bound(C, m, n as usize + 1));
        let mut moved_to: HashMap<Option<u64>, usize> = HashMap::new();
        for (a, now) in ags.iter().zip(&p.assignment) {
            if a.current != *now {
                *moved_to.entry(*now).or_default() += 1;
            }
        }
        prop_assert_eq!(moved_to.get(&Some(new_id)).copied().unwrap_or(0), to_new);
        // And it is a fixed point again.
        let mut after = ags.clone();
        apply(&mut after, &p);
        prop_assert_eq!(place(&after, &ns, &params()).moved, 0);
    }

    #[test]
    fn agents_stay_in_their_az_when_it_has_nodes(
        m in 1usize..400,
        per_az in prop::collection::vec(0u64..4, 4),
        salt in any::<u32>(),
    ) {
        let layout = [("eu", "eu-a"), ("eu", "eu-b"), ("us", "us-a"), ("us", "us-b")];
        let ns = nodes(&[
            ("eu", "eu-a", per_az[0]),
            ("eu", "eu-b", per_az[1]),
            ("us", "us-a", per_az[2]),
            ("us", "us-b", per_az[3]),
        ]);
        let ags = agents(m, &layout, salt);
        let p = place(&ags, &ns, &params());
        let node = |id: u64| ns.iter().find(|n| n.id == id).unwrap();
        for (a, at) in ags.iter().zip(&p.assignment) {
            let Some(id) = at else {
                prop_assert!(ns.is_empty());
                continue;
            };
            let n = node(*id);
            let az_has = ns.iter().any(|n| n.az == a.az);
            let region_has = ns.iter().any(|n| n.region == a.region);
            if az_has {
                prop_assert_eq!(&n.az, &a.az);
            } else if region_has {
                prop_assert_eq!(&n.region, &a.region);
            }
        }
        // Per AZ, the bound holds for the AZ's own agents when no fallback lands there.
        for (i, (_, az)) in layout.iter().enumerate() {
            let count = per_az[i] as usize;
            let sibling_empty = per_az[i ^ 1] == 0;
            let other_region_empty = per_az[(i ^ 2) & !1] == 0 && per_az[((i ^ 2) & !1) + 1] == 0;
            if count == 0 || sibling_empty || other_region_empty {
                continue;
            }
            let mine = ags.iter().filter(|a| a.az == *az).count();
            let loads = p.loads();
            for n in ns.iter().filter(|n| n.az == *az) {
                let l = loads.get(&n.id).copied().unwrap_or(0);
                prop_assert!(l <= bound(C, mine, count), "az {} node {} load {} > bound", az, n.id, l);
            }
        }
    }
}

#[test]
fn no_accepting_node_leaves_agents_unassigned() {
    let mut ns = nodes(&[("r", "a", 2)]);
    ns.iter_mut().for_each(|n| n.accepting = false);
    let mut ags = agents(10, &[("r", "a")], 0);
    ags[0].current = Some(1);
    let p = place(&ags, &ns, &params());
    assert!(p.assignment.iter().all(Option::is_none));
    assert_eq!(p.moved, 1);
}

#[test]
fn placement_does_not_depend_on_input_order() {
    let ns = nodes(&[("r", "a", 3), ("r", "b", 2)]);
    let ags = agents(500, &[("r", "a"), ("r", "b"), ("r", "c")], 7);
    let p = place(&ags, &ns, &params());
    let mut rev: Vec<AgentSlot> = ags.clone();
    rev.reverse();
    let q = place(&rev, &ns, &params());
    let by_id = |a: &[AgentSlot], p: &Placement| -> HashMap<String, Option<u64>> {
        a.iter().map(|x| x.id.clone()).zip(p.assignment.iter().copied()).collect()
    };
    assert_eq!(by_id(&ags, &p), by_id(&rev, &q));
}
