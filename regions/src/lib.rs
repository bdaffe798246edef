//! Region / AZ / resource-pool topology and shard placement.
