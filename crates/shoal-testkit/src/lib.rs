//! Test harness: in-process clusters, fake origins, wait_until.
