//! The in-process integration suite: every acceptance case of the data plane on a loopback
//! cluster (scheduler, seed, daemons) against a fake origin.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod distribution;
mod faults;
mod manager;
mod proxy;
mod restart;
