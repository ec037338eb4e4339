//! The control plane: nodes register and heartbeat; control health-checks them, computes
//! versioned routing tables, keeps a durable purge log and streams tables and purges to every
//! node. It talks to nodes only over HTTP, with the types of [`verge_config::wire`].

pub mod log;
