//! Storage trait with ClickHouse-server and embedded (chDB) backends.
