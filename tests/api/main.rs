//! The integration tests: one binary that drives the real service over HTTP on loopback.

mod helpers;
mod intake;
mod runbooks;
