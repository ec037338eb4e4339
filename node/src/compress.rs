//! Compressed variants of stored objects, for an edge's clients (`[compression]`).
//!
//! A compressible object (by type, size, not already encoded, no `no-transform`) is compressed
//! once per encoding and the result stored beside it as a variant of its own, under the
//! object's key with the encoding added (so purging the URL purges it too) and with the
//! object's freshness. The variant is used while the object it was made from is the one
//! stored; a refreshed object is compressed again. Small objects are compressed on the
//! request that first asks; larger ones in the background (that request gets the identity
//! body). Ranges are served from the identity object. Every answer for a compressible object
//! carries `Vary: Accept-Encoding`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use http::header::{HeaderValue, CONTENT_ENCODING, ETAG, LAST_MODIFIED, RANGE};
use http::{HeaderMap, StatusCode};
use verge_cache::compress;
use verge_cache::store::Lookup;
use verge_cache::{CacheKey, CacheStore, CachedObject};
use verge_config::compression::{CompressionConfig, Encoding};

use crate::metrics::NodeMetrics;

/// Objects up to this size are compressed on the request that asks (about a millisecond at
/// the default levels); larger ones off the request path.
pub(crate) const INLINE_MAX_BYTES: usize = 64 * 1024;

/// What compression makes of one answer from a stored object.
pub(crate) struct Compressed {
    /// The variant to send instead of the object.
    pub(crate) variant: Option<Arc<CachedObject>>,
    /// The object is compressible: the answer varies on `Accept-Encoding`.
    pub(crate) varies: bool,
}

impl Compressed {
    const NOT_APPLICABLE: Compressed = Compressed {
        variant: None,
        varies: false,
    };
}

/// The compressions of one pipeline: the configuration and the ones running.
#[derive(Clone)]
pub(crate) struct Compressor {
    config: Arc<CompressionConfig>,
    store: CacheStore,
    metrics: NodeMetrics,
    /// Variant keys being compressed; bounded by `max_concurrent`.
    running: Arc<Mutex<HashSet<CacheKey>>>,
}

impl Compressor {
    pub(crate) fn new(
        config: Arc<CompressionConfig>,
        store: CacheStore,
        metrics: NodeMetrics,
    ) -> Compressor {
        Compressor {
            config,
            store,
            metrics,
            running: Arc::default(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Reduces a request's `Accept-Encoding` to the encoding it would be served, so a response
    /// that varies on it has one variant per encoding at most.
    pub(crate) fn normalise_request(&self, headers: &mut HeaderMap) {
        let normalised = compress::normalised_accept_encoding(headers, &self.config);
        headers.remove(http::header::ACCEPT_ENCODING);
        if let Some(value) = normalised {
            headers.insert(http::header::ACCEPT_ENCODING, value);
        }
    }

    /// Whether an object with these headers and length may be sent compressed (whatever the
    /// client accepts): answers from it are then made from the whole of it.
    pub(crate) fn applies(&self, headers: &HeaderMap, len: usize) -> bool {
        compress::compressible(headers, len, &self.config)
    }

    /// The compressed variant of `object` for a request under `key`, when there is one (or it
    /// can be made now).
    pub(crate) fn for_request(
        &self,
        key: &CacheKey,
        request: &HeaderMap,
        object: &CachedObject,
    ) -> Compressed {
        if !self.config.enabled
            || object.status != StatusCode::OK
            || !compress::compressible(&object.headers, object.body.len(), &self.config)
        {
            return Compressed::NOT_APPLICABLE;
        }
        let identity = Compressed {
            variant: None,
            varies: true,
        };
        if request.contains_key(RANGE) {
            return identity;
        }
        let Some(encoding) = compress::negotiate(request, &self.config.encodings) else {
            return identity;
        };
        let variant_key = key.with_extras(&format!("enc:{}", encoding.as_str()));
        if let Lookup::Found(variant) = self.store.lookup(&variant_key, request) {
            let variant = if made_from(&variant, object) {
                Some(variant)
            } else if same_content(&variant, object) {
                // The object was revalidated (a 304): its bytes are the variant's source still;
                // the variant takes the object's new headers and freshness.
                let refreshed = refreshed(&variant, object, encoding);
                self.store
                    .insert(variant_key.clone(), Arc::clone(&refreshed));
                Some(refreshed)
            } else {
                None
            };
            if variant.is_some() {
                return Compressed {
                    variant,
                    varies: true,
                };
            }
        }
        if !self.claim(&variant_key) {
            return identity;
        }
        let job = Job {
            key: variant_key,
            encoding,
            level: self.config.level(encoding),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            running: Arc::clone(&self.running),
        };
        if object.body.len() <= INLINE_MAX_BYTES {
            return Compressed {
                variant: job.run(object),
                varies: true,
            };
        }
        let object = object.clone();
        tokio::task::spawn_blocking(move || job.run(&object));
        identity
    }

    /// Marks `key` as being compressed, unless it already is or too many are.
    fn claim(&self, key: &CacheKey) -> bool {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.len() >= self.config.max_concurrent || running.contains(key) {
            return false;
        }
        running.insert(key.clone())
    }
}

/// Whether `variant` was made from this version of `object`.
fn made_from(variant: &CachedObject, object: &CachedObject) -> bool {
    variant.response_time == object.response_time
        && variant.corrected_initial_age == object.corrected_initial_age
        && variant.freshness_lifetime == object.freshness_lifetime
}

/// Whether `variant` was made from the same bytes as `object`, by the object's validator: its
/// `ETag` (the variant's is the weak form of it), else its `Last-Modified`. Without either the
/// object is never revalidated, only replaced, and this is never asked.
fn same_content(variant: &CachedObject, object: &CachedObject) -> bool {
    let field = |o: &CachedObject, name| {
        o.headers
            .get(name)
            .map(|v: &HeaderValue| v.as_bytes().to_vec())
    };
    match field(object, ETAG) {
        Some(tag) => {
            let weak = if tag.starts_with(b"W/") {
                tag
            } else {
                [b"W/".as_slice(), &tag].concat()
            };
            field(variant, ETAG).is_some_and(|v| v == weak)
        }
        None => {
            field(object, LAST_MODIFIED).is_some_and(|lm| field(variant, LAST_MODIFIED) == Some(lm))
        }
    }
}

/// `variant` with `object`'s current headers and freshness.
fn refreshed(
    variant: &CachedObject,
    object: &CachedObject,
    encoding: Encoding,
) -> Arc<CachedObject> {
    let headers = if variant.headers.contains_key(CONTENT_ENCODING) {
        compress::encoded_headers(&object.headers, encoding, variant.body.len())
    } else {
        let mut headers = object.headers.clone();
        compress::vary_on_accept_encoding(&mut headers);
        headers
    };
    variant_of(object, headers, variant.body.clone())
}

/// One compression, claimed in the running set until it ends.
struct Job {
    key: CacheKey,
    encoding: Encoding,
    level: u32,
    store: CacheStore,
    metrics: NodeMetrics,
    running: Arc<Mutex<HashSet<CacheKey>>>,
}

impl Job {
    /// Compresses `object` and stores the variant; `None` when compression failed (the
    /// identity body is served) or did not make it smaller (stored as identity, so it is not
    /// tried again for this version).
    fn run(self, object: &CachedObject) -> Option<Arc<CachedObject>> {
        let result = compress::compress(self.encoding, self.level, &object.body);
        let (variant, outcome) = match result {
            Ok(bytes) if bytes.len() < object.body.len() => {
                let headers =
                    compress::encoded_headers(&object.headers, self.encoding, bytes.len());
                (Some(variant_of(object, headers, bytes.into())), "stored")
            }
            Ok(_) => {
                let mut headers = object.headers.clone();
                compress::vary_on_accept_encoding(&mut headers);
                (
                    Some(variant_of(object, headers, object.body.clone())),
                    "not_smaller",
                )
            }
            Err(error) => {
                tracing::warn!(%error, key = %self.key, "compression failed; serving identity");
                (None, "error")
            }
        };
        self.metrics.compression(self.encoding.as_str(), outcome);
        if let Some(variant) = &variant {
            self.store.insert(self.key.clone(), Arc::clone(variant));
        }
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        variant.filter(|_| outcome == "stored")
    }
}

/// A variant of `object` with these headers and body, and its freshness.
fn variant_of(object: &CachedObject, headers: HeaderMap, body: bytes::Bytes) -> Arc<CachedObject> {
    Arc::new(CachedObject {
        status: object.status,
        headers,
        body,
        response_time: object.response_time,
        corrected_initial_age: object.corrected_initial_age,
        freshness_lifetime: object.freshness_lifetime,
        vary: object.vary.clone(),
        cc: object.cc.clone(),
        surrogate_keys: object.surrogate_keys.clone(),
    })
}
