//! Starting real nodes of any role the way the command line does, in the test's runtime.

use std::sync::Arc;

use verge_cache::{Clock, SystemClock};
use verge_config::ConfigSource;
use verge_node::{Node, Role, StartError};

/// Binds a node of role `R` from `config` given on the command line, with the real clock.
pub async fn bind<R: Role>(config: &R::Config) -> Result<Node<R>, StartError> {
    bind_with_clock(config, Arc::new(SystemClock)).await
}

/// Binds a node of role `R` from `config` given on the command line; freshness is judged by
/// `clock` (a `ManualClock` lets a test move time for the cache).
pub async fn bind_with_clock<R: Role>(
    config: &R::Config,
    clock: Arc<dyn Clock>,
) -> Result<Node<R>, StartError> {
    Node::<R>::bind(config, ConfigSource::CommandLine, clock).await
}
