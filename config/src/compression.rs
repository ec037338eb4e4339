//! `[compression]`: which stored objects an edge serves compressed, in which encodings, at
//! which levels. On by default for text, JSON, JavaScript, XML and SVG of at least 1 KiB. Only
//! edges compress (shields serve edges, which compress for their clients).

use serde::Deserialize;

use crate::error::Collector;
use crate::field::{count, size};
use crate::units::{ByteSize, RawSize};

/// An encoding Verge produces, in the order a client's equal preferences are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];

    /// Its `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    fn parse(text: &str) -> Result<Encoding, String> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.as_str() == text)
            .ok_or_else(|| {
                format!("unknown encoding {text:?}: expected \"br\", \"zstd\" or \"gzip\"")
            })
    }

    /// The levels each encoding accepts.
    fn levels(self) -> (u64, u64) {
        match self {
            Encoding::Br => (0, 11),
            Encoding::Zstd => (1, 19),
            Encoding::Gzip => (1, 9),
        }
    }
}

/// The `[compression]` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub enabled: Option<bool>,
    pub encodings: Option<Vec<String>>,
    pub min_size: Option<RawSize>,
    pub types: Option<Vec<String>>,
    pub level: Option<RawLevels>,
    pub max_concurrent: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLevels {
    pub br: Option<u64>,
    pub zstd: Option<u64>,
    pub gzip: Option<u64>,
}

/// What an edge compresses, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionConfig {
    pub enabled: bool,
    /// The encodings produced, most preferred first (a client's own `q` values come first).
    pub encodings: Vec<Encoding>,
    /// Smaller objects are served as they are.
    pub min_size: ByteSize,
    /// Media types compressed: exact (`application/json`), a whole type (`text/*`); any
    /// `+json` or `+xml` type is compressed too.
    pub types: Vec<String>,
    pub br_level: u32,
    pub zstd_level: u32,
    pub gzip_level: u32,
    /// Compressions running at once; more wait for a later request.
    pub max_concurrent: usize,
}

impl CompressionConfig {
    /// Nothing compressed (a shield, or `enabled = false`).
    pub fn off() -> CompressionConfig {
        CompressionConfig {
            enabled: false,
            ..defaults()
        }
    }

    pub fn level(&self, encoding: Encoding) -> u32 {
        match encoding {
            Encoding::Br => self.br_level,
            Encoding::Zstd => self.zstd_level,
            Encoding::Gzip => self.gzip_level,
        }
    }
}

/// The types compressed by default.
pub const DEFAULT_TYPES: [&str; 6] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
    "application/wasm",
];

fn defaults() -> CompressionConfig {
    CompressionConfig {
        enabled: true,
        encodings: Encoding::ALL.to_vec(),
        min_size: ByteSize(1024),
        types: DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
        br_level: 5,
        zstd_level: 3,
        gzip_level: 6,
        max_concurrent: 2,
    }
}

/// Checks `[compression]`; absent, compression is on with the defaults.
pub(crate) fn validate_compression(
    c: &mut Collector,
    raw: Option<RawCompression>,
) -> Option<CompressionConfig> {
    let raw = raw.unwrap_or_default();
    let d = defaults();
    let before = c.len();
    let encodings = match raw.encodings {
        None => d.encodings,
        Some(list) => {
            let mut encodings = Vec::new();
            for text in &list {
                if let Some(e) = c.take("compression.encodings", Encoding::parse(text)) {
                    if encodings.contains(&e) {
                        c.push("compression.encodings", format!("{text:?} is listed twice"));
                    }
                    encodings.push(e);
                }
            }
            encodings
        }
    };
    let min_size = size(c, "compression.min_size", raw.min_size.as_ref(), "1KiB");
    let types = match raw.types {
        None => d.types,
        Some(types) => types
            .into_iter()
            .filter_map(|t| c.take("compression.types", media_type(&t)))
            .collect(),
    };
    let levels = raw.level.unwrap_or_default();
    let mut level = |encoding: Encoding, value: Option<u64>, default: u32| -> Option<u32> {
        let (low, high) = encoding.levels();
        let key = format!("compression.level.{}", encoding.as_str());
        let n = count(c, &key, value, u64::from(default), (low, high))?;
        u32::try_from(n).ok()
    };
    let br_level = level(Encoding::Br, levels.br, d.br_level);
    let zstd_level = level(Encoding::Zstd, levels.zstd, d.zstd_level);
    let gzip_level = level(Encoding::Gzip, levels.gzip, d.gzip_level);
    let max_concurrent = count(
        c,
        "compression.max_concurrent",
        raw.max_concurrent,
        d.max_concurrent as u64,
        (1, 256),
    );
    if c.len() > before {
        return None;
    }
    Some(CompressionConfig {
        enabled: raw.enabled.unwrap_or(true),
        encodings,
        min_size: min_size?,
        types,
        br_level: br_level?,
        zstd_level: zstd_level?,
        gzip_level: gzip_level?,
        max_concurrent: usize::try_from(max_concurrent?).ok()?,
    })
}

/// A media type pattern: `type/subtype` or `type/*`, lower-case.
fn media_type(text: &str) -> Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    let valid = lower.split_once('/').is_some_and(|(kind, sub)| {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        token(kind) && (sub == "*" || token(sub))
    });
    if !valid {
        return Err(format!(
            "{text:?} is not a media type: expected \"type/subtype\" or \"type/*\""
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use crate::{EdgeConfig, ShieldConfig};

    use super::*;

    fn edge(extra: &str) -> Result<EdgeConfig, crate::ConfigErrors> {
        EdgeConfig::from_toml(&format!(
            "[edge]\n[upstream]\norigin = \"http://127.0.0.1:9\"\n{extra}"
        ))
    }

    #[test]
    fn compression_is_on_by_default_for_an_edge_and_off_for_a_shield() {
        let config = edge("").unwrap();
        assert_eq!(*config.cache.compression, defaults());
        let shield =
            ShieldConfig::from_toml("[shield]\n[origin]\nservers = [\"http://127.0.0.1:9\"]\n")
                .unwrap();
        assert!(!shield.cache.compression.enabled);
    }

    #[test]
    fn the_table_is_read_and_checked() {
        let config = edge(
            "[compression]\nencodings = [\"gzip\"]\nmin_size = \"4KiB\"\n\
             types = [\"text/html\", \"application/*\"]\nlevel = { gzip = 9 }\n",
        )
        .unwrap();
        let c = &config.cache.compression;
        assert_eq!(c.encodings, [Encoding::Gzip]);
        assert_eq!(c.min_size, ByteSize(4096));
        assert_eq!(c.types, ["text/html", "application/*"]);
        assert_eq!(c.gzip_level, 9);
        assert!(
            !edge("[compression]\nenabled = false\n")
                .unwrap()
                .cache
                .compression
                .enabled
        );

        let errors = edge(
            "[compression]\nencodings = [\"deflate\", \"br\", \"br\"]\ntypes = [\"html\"]\n\
             level = { br = 12 }\nmax_concurrent = 0\n",
        )
        .unwrap_err();
        for path in [
            "compression.encodings",
            "compression.types",
            "compression.level.br",
            "compression.max_concurrent",
        ] {
            assert!(errors.mentions(path), "{path}: {errors}");
        }
        let shield = ShieldConfig::from_toml(
            "[shield]\n[origin]\nservers = [\"http://127.0.0.1:9\"]\n[compression]\nenabled = true\n",
        )
        .unwrap_err();
        assert!(shield.to_string().contains("compression"), "{shield}");
    }
}
