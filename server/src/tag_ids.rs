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
