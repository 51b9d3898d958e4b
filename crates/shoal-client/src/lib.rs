//! Typed clients for shoal's services: gRPC channels with our timeouts, the Vortex piece client.
//!
//! Retry and timeout policy for calls between roles lives here, not at each call site.

pub mod channel;
pub mod manager;
pub mod seed;
pub mod vortex;
