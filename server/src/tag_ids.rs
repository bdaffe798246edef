//! SmartEncoding ids from the cluster: the tagging crate's [`IdAllocator`] over this
//! node's region group, so that every ingest node of a region gives a name the same id.
//!
//! Ids are reserved in blocks (`ReserveTagIds`, [`MetaConfig::tag_block_size`] ids per
//! Raft entry, inside the region's id range) which the dictionary spends without asking
//! anyone; the new names of a batch are then bound in one `BindTags` entry, where the
//! first node to bind a name wins. Known names never reach this module.
//!
//! [`MetaConfig::tag_block_size`]: fathom_cluster::MetaConfig::tag_block_size

use std::future::Future;
use std::ops::Range;

use fathom_cluster::state::{region_tag_ids, FIRST_TAG_ID, MAX_TAG_BLOCK};
use fathom_cluster::{Command, MetaError, MetaNode, MetaRouter, Response};
use fathom_tagging::{IdAllocator, TagError};
use tokio::runtime::{Handle, RuntimeFlavor};

pub struct ClusterIdAllocator {
    router: MetaRouter,
    /// The runtime the cluster runs on: the Raft writes run there.
    runtime: Handle,
}

impl ClusterIdAllocator {
    pub fn new(router: MetaRouter, runtime: Handle) -> ClusterIdAllocator {
        ClusterIdAllocator { router, runtime }
    }

    /// The group that allocates: the region group once it has its id range.
    fn group(&self, tag_type: &str) -> Result<&MetaNode, TagError> {
        let meta = self.router.regional();
        if self.router.region_group().is_some() && meta.read(|s| s.region_group.is_none()) {
            return Err(failed(tag_type, "the region group has no tag id range yet"));
        }
        Ok(meta)
    }

    /// Runs a Raft write on the cluster's runtime and waits for it on this thread.
    ///
    /// The dictionary calls in from plain threads, `spawn_blocking` threads and
    /// runtime workers. The write itself never runs on the waiting thread, so the
    /// wait cannot starve it: on a multi-thread worker `block_in_place` first hands
    /// the worker's other tasks (Raft's too, when it is the same runtime) to another
    /// thread; a plain or blocking thread holds nothing. Only the one thread of a
    /// current-thread runtime that also runs the cluster could deadlock: refused.
    fn run(
        &self,
        tag_type: &str,
        write: impl Future<Output = Result<Response, MetaError>> + Send + 'static,
    ) -> Result<Response, TagError> {
        let here = Handle::try_current().ok();
        let multi = here.as_ref().is_some_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        if here.as_ref().is_some_and(|h| !multi && h.id() == self.runtime.id()) {
            return Err(failed(tag_type, "called on the cluster's current-thread runtime"));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(write.await);
        });
        let got = if multi { tokio::task::block_in_place(|| rx.recv()) } else { rx.recv() };
        match got {
            Ok(Ok(Response::Rejected { reason })) => Err(failed(tag_type, &reason)),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(failed(tag_type, &e.to_string())),
            Err(_) => Err(failed(tag_type, "the cluster runtime stopped")),
        }
    }
}

fn failed(tag_type: &str, message: &str) -> TagError {
    TagError::Allocation { tag_type: tag_type.to_string(), message: message.to_string() }
}

fn unexpected(tag_type: &str, r: Response) -> TagError {
    failed(tag_type, &format!("unexpected answer {r:?}"))
}

impl IdAllocator for ClusterIdAllocator {
    /// A block of at least `n` ids, all above `highest`: a dictionary file from
    /// before the cluster allocated ids holds ids the region may not have reserved
    /// yet, and those stay with their names (the part of a block below them is
    /// retired unused).
    fn allocate(&self, tag_type: &str, highest: u32, n: u32) -> Result<Range<u32>, TagError> {
        let meta = self.group(tag_type)?;
        let want = u64::from(n.max(meta.tag_block_size()).max(1));
        let above = u64::from(highest) + 1;
        loop {
            // Where the group's next block starts (as seen here, perhaps behind).
            let next = meta.read(|s| {
                let next = s.tags.get(tag_type).map_or(FIRST_TAG_ID, |d| d.next_id);
                s.region_group.as_ref().map_or(next, |g| next.max(region_tag_ids(g.number).start))
            });
            let behind = above.saturating_sub(u64::from(next));
            let count = (want + behind).min(u64::from(MAX_TAG_BLOCK)) as u32;
            let cmd =
                Command::ReserveTagIds { tag_type: tag_type.to_string(), node: meta.id(), count };
            let router = self.router.clone();
            match self.run(tag_type, async move { router.write(cmd).await })? {
                Response::TagBlock { start, end } if u64::from(end) > above => {
                    return Ok(start.max(above as u32)..end);
                }
                Response::TagBlock { .. } => continue,
                r => return Err(unexpected(tag_type, r)),
            }
        }
    }

    fn bind(&self, tag_type: &str, offered: &[(&str, u32)]) -> Result<Vec<u32>, TagError> {
        let meta = self.group(tag_type)?;
        let pairs = offered.iter().map(|&(name, id)| (name.to_string(), id)).collect();
        let cmd = Command::BindTags { tag_type: tag_type.to_string(), node: meta.id(), pairs };
        let router = self.router.clone();
        match self.run(tag_type, async move { router.write(cmd).await })? {
            Response::TagIds { ids } => Ok(ids),
            r => Err(unexpected(tag_type, r)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! A real region group of three Raft members on loopback in one process.
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use fathom_cluster::state::RegionGroup;
    use fathom_cluster::MetaConfig;
    use fathom_tagging::{DictConfig, Dictionary};

    use super::*;

    fn configs(dir: &Path, n: u64, block: u32) -> Vec<MetaConfig> {
        (1..=n)
            .map(|id| {
                let addr =
                    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
                let mut c = MetaConfig::new(id, addr, dir.join(format!("node-{id}")));
                c.tag_block_size = block;
                c
            })
            .collect()
    }

    async fn poll(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..300 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn start(cfgs: &[MetaConfig]) -> Vec<MetaNode> {
        let mut nodes = Vec::new();
        for c in cfgs {
            nodes.push(MetaNode::start(c.clone()).await.unwrap());
        }
        let voters = cfgs.iter().map(|c| (c.node_id, c.listen_addr.to_string())).collect();
        nodes[0].initialize(voters).await.unwrap();
        poll("a leader", || nodes.iter().any(|n| n.is_leader())).await;
        nodes
    }

    fn dict(dir: &Path, global: &MetaNode, region: &MetaNode) -> Arc<Dictionary> {
        let router = MetaRouter::with_region(global.clone(), "eu", region.clone());
        let ids = Arc::new(ClusterIdAllocator::new(router, Handle::current()));
        Arc::new(Dictionary::open(dir, "pod", ids, DictConfig::default()).unwrap())
    }

    fn insert_all(d: &Dictionary, names: &[String]) -> Vec<(u32, Arc<str>)> {
        let mut out = Vec::new();
        for batch in names.chunks(50) {
            let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
            d.insert_many(&batch, &mut out).unwrap();
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingest_nodes_of_a_region_agree_on_tag_ids_and_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        // Tag ids never touch the global group: one member is enough for the routers.
        let global_cfg = configs(&dir.path().join("global"), 1, 64);
        let global = start(&global_cfg).await.remove(0);
        let cfgs = configs(&dir.path().join("eu"), 3, 64);
        let region = start(&cfgs).await;
        let group = RegionGroup { region: "eu".into(), number: 1 };
        let init = Command::InitRegionGroup { group, carried: Default::default() };
        assert_eq!(region[0].write(init).await.unwrap(), Response::Ok);
        poll("the range everywhere", || {
            region.iter().all(|n| n.read(|s| s.region_group.is_some()))
        })
        .await;
        let range = region_tag_ids(1);

        // Three ingest nodes, overlapping names, concurrently: from a plain thread, a
        // blocking-pool thread (as ingest calls it) and a runtime worker.
        let names: Vec<Vec<String>> = (0..3)
            .map(|i| (i * 300..i * 300 + 600).map(|n| format!("pod-{n:04}")).collect())
            .collect();
        let dirs: Vec<_> = (0..3).map(|i| dir.path().join(format!("tags-{i}"))).collect();
        let dicts: Vec<_> = (0..3).map(|i| dict(&dirs[i], &global, &region[i])).collect();
        let t0 = Instant::now();
        let (d0, n0) = (dicts[0].clone(), names[0].clone());
        let plain = std::thread::spawn(move || insert_all(&d0, &n0));
        let (d1, n1) = (dicts[1].clone(), names[1].clone());
        let blocking = tokio::task::spawn_blocking(move || insert_all(&d1, &n1));
        let (d2, n2) = (dicts[2].clone(), names[2].clone());
        let worker = tokio::spawn(async move { insert_all(&d2, &n2) });
        let outs = [plain.join().unwrap(), blocking.await.unwrap(), worker.await.unwrap()];
        let asked = outs.iter().map(Vec::len).sum::<usize>();
        eprintln!(
            "{asked} names (1200 distinct) over 3 nodes, batches of 50, blocks of 64: {:.0}/s",
            asked as f64 / t0.elapsed().as_secs_f64()
        );

        let mut by_name: HashMap<Arc<str>, u32> = HashMap::new();
        let mut by_id: HashMap<u32, Arc<str>> = HashMap::new();
        for (i, out) in outs.iter().enumerate() {
            assert_eq!(out.len(), names[i].len());
            for (id, name) in out {
                assert!(range.contains(id), "{name} = {id}");
                assert_eq!(*by_name.entry(name.clone()).or_insert(*id), *id, "{name}");
                assert_eq!(by_id.entry(*id).or_insert(name.clone()), name, "id {id}");
            }
        }
        assert_eq!(by_name.len(), 1200);
        // The dictionaries hold what the region group bound.
        let bound = || region[0].read(|s| s.tags["pod"].by_name.clone());
        poll("every binding applied", || bound().len() == 1200).await;
        for (name, id) in bound() {
            assert_eq!(by_name.get(name.as_str()), Some(&id), "{name}");
        }

        // Restart everything: the group from its data directories, the dictionaries
        // from their files.
        drop(dicts);
        for n in &region {
            n.shutdown().await.unwrap();
        }
        drop(region);
        let region = start(&cfgs).await;
        let dicts: Vec<_> = (0..3).map(|i| dict(&dirs[i], &global, &region[i])).collect();
        for (i, d) in dicts.iter().enumerate() {
            for n in &names[i] {
                assert_eq!(d.lookup(n), Some(by_name[n.as_str()]), "{n} on node {i}");
            }
        }
        // Node 0 learns names node 2 bound, and a new one that fits no old id.
        let mut later = names[2][400..].to_vec();
        later.push("pod-new".into());
        let d0 = dicts[0].clone();
        let out = tokio::task::spawn_blocking(move || insert_all(&d0, &later)).await.unwrap();
        let (fresh, known) = out.split_last().unwrap();
        for (id, name) in known {
            assert_eq!(by_name[name], *id, "{name}");
        }
        assert!(range.contains(&fresh.0) && !by_id.contains_key(&fresh.0), "{fresh:?}");
        assert_eq!(dicts[0].stats().unbound, 0);
        for n in region.iter().chain([&global]) {
            n.shutdown().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dictionary_from_local_allocation_keeps_its_ids() {
        let dir = tempfile::tempdir().unwrap();
        let tags = dir.path().join("tags");
        let local = Arc::new(fathom_tagging::LocalIdAllocator);
        let old = Dictionary::open(&tags, "pod", local, DictConfig::default()).unwrap();
        let before: Vec<u32> =
            ["a", "b", "c"].iter().map(|n| old.get_or_insert(n).unwrap()).collect();
        assert_eq!(before, [1, 2, 3]);
        drop(old);
        let meta = start(&configs(&dir.path().join("eu"), 1, 2)).await.remove(0);
        let group = RegionGroup { region: "eu".into(), number: 0 };
        let init = Command::InitRegionGroup { group, carried: Default::default() };
        assert_eq!(meta.write(init).await.unwrap(), Response::Ok);
        let d = dict(&tags, &meta, &meta);
        let out = tokio::task::spawn_blocking(move || {
            let names = ["c", "d", "e", "a"].map(String::from);
            (insert_all(&d, &names), d)
        });
        let (out, d) = out.await.unwrap();
        let ids: Vec<u32> = out.iter().map(|e| e.0).collect();
        assert_eq!((ids[0], ids[3]), (3, 1), "old names keep their ids");
        assert!(ids[1] > 3 && ids[2] > 3 && ids[1] != ids[2], "{ids:?}");
        assert_eq!(d.stats().unbound, 0);
        meta.shutdown().await.unwrap();
    }
}
