//! Multi-node tests in network namespaces: crashes, partitions, no loss.
