//! Verge's HTTP cache engine, shared by edges and shields. It holds no sockets and knows no roles.
//!
//! - [`key`]: the cache key (scheme, normalised host, path and query);
//! - [`policy`]: RFC 9111 decisions as pure functions: `Cache-Control` parsing, storability,
//!   freshness lifetime and age;
//! - [`object`]: a stored response and what can be asked of it (age, freshness, variant match);
//! - [`store`]: the moka store, bounded in bytes, resizable in place;
//! - [`flight`]: single-flight fills, so concurrent misses for one key make one upstream request,
//!   and the hit-for-miss memory of keys whose responses are not storable;
//! - [`range`]: byte ranges served from a stored full representation;
//! - [`purge`]: the index that finds keys by URL prefix and surrogate key;
//! - [`rules`]: the operator's cache rules applied to a request and a response (match, query
//!   and key normalisation, cookies, TTLs);
//! - [`compress`]: which encoding a request gets, which objects are compressed, and how;
//! - [`clock`]: the wall clock, injectable so tests drive time.

pub mod clock;
pub mod compress;
pub mod flight;
pub mod key;
pub mod object;
pub mod policy;
pub mod purge;
pub mod range;
pub mod rules;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use flight::{FillOutcome, FlightLeader, Flights, Join};
pub use key::{CacheKey, KeyError};
pub use object::{CachedObject, VaryKey};
pub use policy::{CacheControl, NotStorable};
pub use store::{CacheStore, Lookup, PurgeTarget, Resized};
