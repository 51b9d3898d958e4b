//! The wire contract with Dragonfly v2.
//!
//! This crate is the only one that names `dragonfly-api` (gRPC services and messages) and
//! `vortex-protocol` (piece transfer framing). Everyone else uses the re-exports below, so the
//! wire crates are pinned and upgraded in one place.
//!
//! - [`vortex`]: reading and writing Vortex packets on async streams.
//! - [`ErrorCode`]: the one mapping from service errors to gRPC and HTTP statuses.

pub mod convert;
mod error_code;
pub mod vortex;

pub use dragonfly_api as api;
pub use dragonfly_api::common::v2 as common;
pub use dragonfly_api::dfdaemon::v2 as dfdaemon;
pub use dragonfly_api::errordetails::v2 as errordetails;
pub use dragonfly_api::manager::v2 as manager;
pub use dragonfly_api::scheduler::v2 as scheduler;
pub use error_code::ErrorCode;
pub use prost_wkt_types;
pub use vortex_protocol;

/// The maximum gRPC message size we decode: registrations carry headers and certificate chains.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
