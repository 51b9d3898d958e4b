//! Tracing setup, shared log field names and the metrics registry.
