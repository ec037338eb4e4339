//! The demo crate's integration tests, one binary: delay links, the sample origin, the demo and
//! the bench.

#![allow(clippy::unwrap_used)]

mod bench;
mod delay;
mod demo;
mod origin;
