//! The durable purge log.
