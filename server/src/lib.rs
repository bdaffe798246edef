//! fathom-server: cluster + controller + ingest + query in one binary.
