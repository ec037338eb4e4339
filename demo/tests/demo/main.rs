//! The demo crate's integration tests, one binary: delay links, the sample origin, the demo and
//! the bench.

#![allow(clippy::unwrap_used)]

mod bench;
mod delay;
mod demo;
mod detour;
mod faults;
mod origin;
mod orphans;
mod parts;
mod status_page;

use std::time::Duration;

use verge_demo::{Demo, DemoOptions};

/// A demo with one edge per region; the bound on its start is generous, as a loaded CI machine
/// may run the demo tests side by side with a browser.
async fn small_demo() -> Demo {
    small_demo_with(DemoOptions::default()).await
}

/// [`small_demo`] from `options`.
async fn small_demo_with(options: DemoOptions) -> Demo {
    let options = DemoOptions {
        edges_per_region: 1,
        ..options
    };
    tokio::time::timeout(Duration::from_secs(60), Demo::start(options))
        .await
        .expect("the demo starts within 60 s")
        .expect("the demo starts")
}
