//! Receives agent, OTLP and Prometheus data; tags, batches and writes it.
