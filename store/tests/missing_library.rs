//! Without libchdb.so the embedded store says exactly how to get it.
//! (Its own test binary: once a process has loaded the library it stays loaded.)

use fathom_store::{EmbeddedConfig, EmbeddedStore, StoreError};

#[tokio::test]
async fn a_missing_library_names_the_script_and_the_npm_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path().join("data"));
    config.library = Some(dir.path().join("nowhere/libchdb.so"));
    let err = match EmbeddedStore::open(config).await {
        Err(e) => e,
        Ok(_) => panic!("opened without a library"),
    };
    assert!(matches!(err, StoreError::LibraryMissing(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("nowhere/libchdb.so"), "{msg}");
    assert!(msg.contains("scripts/fetch-chdb.sh"), "{msg}");
    assert!(msg.contains("npm pack @chdb/lib-linux-x64-gnu@26.5.3"), "{msg}");

    // A file that is not a shared library is refused the same way.
    let bogus = dir.path().join("libchdb.so");
    std::fs::write(&bogus, b"not an ELF file").unwrap();
    let mut config = EmbeddedConfig::new(dir.path().join("data"));
    config.library = Some(bogus);
    let err = EmbeddedStore::open(config).await.err().expect("bogus library loaded");
    assert!(matches!(err, StoreError::LibraryMissing(_)), "{err}");
}
