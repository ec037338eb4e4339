//! Reading values out of the Prometheus text exposition served at `/metrics`.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` response.
#[derive(Debug, Clone)]
pub struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    /// What `registry` holds now, as `/metrics` would serve it.
    pub fn of(registry: &prometheus::Registry) -> Metrics {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        Metrics::parse(&text)
    }

    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}")))
            .collect();
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// The raw exposition text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Asserts that [`value`](Self::value) of `name` and `labels` is `want`; on failure shows the
    /// whole exposition.
    #[track_caller]
    pub fn assert_value(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        assert_eq!(
            self.value(name, labels),
            Some(want),
            "{name} {labels:?}:\n{}",
            self.text
        );
    }

    /// The value of the sample named `name` whose labels include all of `labels`; when several
    /// match, their sum. `None` when no sample matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .peekable();
        matching.peek()?;
        Some(matching.map(|s| s.value).sum())
    }

    /// Like [`Metrics::value`], but 0 when absent (counters not yet incremented are absent).
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Whether a sample of `name` (any labels) is exposed.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="1",b="x"` (label values here hold no quotes or commas).
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let v = v.strip_prefix('"')?.strip_suffix('"')?;
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}
