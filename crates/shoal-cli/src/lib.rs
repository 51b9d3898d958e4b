//! Client commands of the `shoal` binary (`shoal get`, ...) and their output.
//!
//! Commands talk to the local daemon over its unix socket (`dfdaemon.v2.DfdaemonDownload`).

pub mod get;
pub mod init;
