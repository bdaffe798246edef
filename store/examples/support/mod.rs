//! Helpers of the store's measurement examples.
#![allow(dead_code)]

use std::time::Duration;

use fathom_store::{EmbeddedConfig, EmbeddedStore, Store};

/// CPU time (user + system) of the whole process (`libc::RUSAGE_SELF`:
/// every chDB thread counted) or of the calling thread (`RUSAGE_THREAD`).
pub fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

/// Runs a statement; its failure ends the example.
pub async fn sql(store: &EmbeddedStore, q: &str) {
    if let Err(e) = store.query(q).await {
        panic!("{q}: {e}");
    }
}

/// An embedded store in `dir`; a failure (no libchdb.so, say) ends the
/// example with the store's message.
pub async fn open_store(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir)).await.unwrap_or_else(|e| panic!("{e}"))
}
