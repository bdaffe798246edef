//! openraft's own storage conformance suite run against the on-disk log and state machine.

use fathom_cluster::log_store::FileLogStore;
use fathom_cluster::sm_store::FileStateMachine;
use fathom_cluster::types::{NodeId, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, FileLogStore, FileStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, FileLogStore, FileStateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = FileLogStore::open(&dir.path().join("log")).expect("open log");
        let sm = FileStateMachine::open(&dir.path().join("sm")).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[test]
fn file_stores_pass_the_openraft_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite: {e}");
    }
}
