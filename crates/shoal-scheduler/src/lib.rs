//! The scheduler role: host, task and peer state, parent selection, seed triggering.
