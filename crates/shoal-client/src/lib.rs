//! Typed clients for the scheduler and daemons: channels, timeouts, Vortex piece client.
