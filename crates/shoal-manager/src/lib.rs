//! The manager (being built).
