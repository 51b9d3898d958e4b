//! The in-process integration suite: every acceptance case of the data plane on a loopback
//! cluster (scheduler, seed, daemons) against a fake origin.

mod distribution;
mod faults;
mod restart;
