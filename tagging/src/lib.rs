//! AutoTagging and SmartEncoding.
//!
//! SmartEncoding: resource tags (host, region, AZ, process name, container,
//! later pods, namespaces, workloads, services) travel and are stored as
//! `u32` ids from per-type dictionaries ([`Dictionaries`]); names are
//! joined back only at query time. Id 0 means "none / unknown".

pub mod dict;

pub use dict::{
    DictConfig, DictStats, Dictionaries, Dictionary, IdAllocator, LocalIdAllocator, Reader,
    TagError,
};

/// The tag types ingest encodes; the names are the stems of the store's
/// id columns (`host` -> `host_id_0`, ...).
pub mod tag_type {
    pub const AGENT: &str = "agent";
    pub const REGION: &str = "region";
    pub const AZ: &str = "az";
    pub const HOST: &str = "host";
    pub const PROCESS: &str = "process";
    pub const CONTAINER: &str = "container";
    pub const POD_CLUSTER: &str = "pod_cluster";
    pub const POD_NS: &str = "pod_ns";
    pub const WORKLOAD: &str = "workload";
    pub const POD: &str = "pod";
    pub const SERVICE: &str = "service";
}
