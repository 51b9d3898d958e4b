//! The upload side: what other peers and schedulers call on this daemon.

pub(crate) mod grpc;
pub(crate) mod limit;
pub(crate) mod vortex;
