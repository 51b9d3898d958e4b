//! The daemon role: download engine, piece store, upload servers, local download API, metrics.
