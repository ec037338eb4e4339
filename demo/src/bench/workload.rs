//! What `verge bench` sends: the workload as the command line gives it, checked whole before
//! anything starts (every problem reported at once), and the paths it asks for.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::zipf::XorShift;

/// Most objects a workload may rank (the sampler keeps one `f64` each).
pub const MAX_OBJECTS: usize = 1_000_000;
/// Most clients per region.
pub const MAX_CONCURRENCY: usize = 1_024;
/// Largest Zipf exponent accepted; beyond it nearly every request is for one object.
pub const MAX_ZIPF: f64 = 5.0;
/// Largest share of operations that may be purges.
pub const MAX_PURGE_SHARE: f64 = 0.5;

/// How clients find their edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Steering {
    /// Ask the GeoDNS server for the host name from the region's source address; the answer's
    /// addresses are the edges.
    Dns,
    /// Ask the HTTP steering listener; its `302 Location` is the edge.
    Http,
    /// No steering: each region's clients use the edges the state lists in their region.
    None,
}

impl Steering {
    pub fn parse(text: &str) -> Result<Steering, String> {
        match text {
            "dns" => Ok(Steering::Dns),
            "http" => Ok(Steering::Http),
            "none" => Ok(Steering::None),
            other => Err(format!(
                "{other:?} is not a steering mode (dns, http or none)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Steering::Dns => "dns",
            Steering::Http => "http",
            Steering::None => "none",
        }
    }
}

/// The workload as given on the command line, before checking.
#[derive(Debug, Clone)]
pub struct WorkloadArgs {
    /// `None`: every sample path of the state (or 100 synthetic paths without samples).
    pub objects: Option<usize>,
    pub zipf: f64,
    pub concurrency: usize,
    /// Requests per second per region; `None`: as fast as the clients go.
    pub rate: Option<f64>,
    pub duration: String,
    pub warmup: String,
    pub purge_share: f64,
    pub steering: String,
    pub timeout: String,
    pub seed: u64,
}

impl Default for WorkloadArgs {
    fn default() -> Self {
        WorkloadArgs {
            objects: None,
            zipf: 1.0,
            concurrency: 4,
            rate: None,
            duration: "10s".into(),
            warmup: "2s".into(),
            purge_share: 0.0,
            steering: "dns".into(),
            timeout: "10s".into(),
            seed: 1,
        }
    }
}

/// A checked workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub objects: Option<usize>,
    pub zipf: f64,
    pub concurrency: usize,
    pub rate: Option<f64>,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// Requests before measuring starts: they fill the caches, and are not counted.
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    pub purge_share: f64,
    pub steering: Steering,
    /// Bound on one request (head and body).
    #[serde(serialize_with = "seconds")]
    pub timeout: Duration,
    pub seed: u64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The longest `--duration`, `--warmup` or `--timeout`.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Every problem with a workload, one per line, each naming its flag.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadErrors(pub Vec<String>);

impl fmt::Display for WorkloadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid workload:")?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkloadErrors {}

impl WorkloadArgs {
    pub fn validate(&self) -> Result<Workload, WorkloadErrors> {
        let mut errors = Vec::new();
        let mut duration_of =
            |flag: &str, text: &str, min: Duration| match verge_config::parse_duration(text) {
                Ok(d) if d < min => {
                    errors.push(format!("--{flag} {text}: at least {min:?}"));
                    min
                }
                Ok(d) if d > MAX_DURATION => {
                    errors.push(format!("--{flag} {text}: at most 24h"));
                    d
                }
                Ok(d) => d,
                Err(e) => {
                    errors.push(format!("--{flag} {text:?}: {e}"));
                    min
                }
            };
        let duration = duration_of("duration", &self.duration, Duration::from_millis(100));
        let warmup = duration_of("warmup", &self.warmup, Duration::ZERO);
        let timeout = duration_of("timeout", &self.timeout, Duration::from_millis(10));
        if let Some(n) = self.objects {
            if n == 0 || n > MAX_OBJECTS {
                errors.push(format!("--objects {n}: between 1 and {MAX_OBJECTS}"));
            }
        }
        if !(0.0..=MAX_ZIPF).contains(&self.zipf) {
            errors.push(format!(
                "--zipf {}: a popularity exponent between 0 (uniform) and {MAX_ZIPF}",
                self.zipf
            ));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            errors.push(format!(
                "--concurrency {}: between 1 and {MAX_CONCURRENCY} clients per region",
                self.concurrency
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
                errors.push(format!(
                    "--rate {rate}: requests per second per region, above 0 and at most 1000000"
                ));
            }
        }
        if !(0.0..=MAX_PURGE_SHARE).contains(&self.purge_share) {
            errors.push(format!(
                "--purge-share {}: a share of operations between 0 and {MAX_PURGE_SHARE}",
                self.purge_share
            ));
        }
        let steering = Steering::parse(&self.steering).unwrap_or_else(|e| {
            errors.push(format!("--steering: {e}"));
            Steering::None
        });
        if !errors.is_empty() {
            return Err(WorkloadErrors(errors));
        }
        Ok(Workload {
            objects: self.objects,
            zipf: self.zipf,
            concurrency: self.concurrency,
            rate: self.rate,
            duration,
            warmup,
            purge_share: self.purge_share,
            steering,
            timeout,
            seed: self.seed,
        })
    }
}

impl Workload {
    /// The paths asked for, most popular first: `objects` of the `samples` in an order
    /// shuffled by the seed (so popularity does not follow the listing), or synthetic
    /// `/bench/obj-N` paths when there are no samples.
    pub fn paths(&self, samples: &[String]) -> Result<Vec<String>, String> {
        if samples.is_empty() {
            let n = self.objects.unwrap_or(100);
            return Ok((0..n).map(|i| format!("/bench/obj-{i}")).collect());
        }
        let n = self.objects.unwrap_or(samples.len());
        if n > samples.len() {
            return Err(format!(
                "--objects {n}: the target lists only {} sample paths",
                samples.len()
            ));
        }
        let mut paths = samples.to_vec();
        let mut rng = XorShift::new(self.seed);
        for i in (1..paths.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            paths.swap(i, j);
        }
        paths.truncate(n);
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let w = WorkloadArgs::default().validate().unwrap();
        assert_eq!(w.duration, Duration::from_secs(10));
        assert_eq!(w.steering, Steering::Dns);
    }

    #[test]
    fn every_bad_parameter_is_reported_with_its_flag() {
        let args = WorkloadArgs {
            objects: Some(0),
            zipf: -1.0,
            concurrency: 0,
            rate: Some(0.0),
            duration: "soon".into(),
            warmup: "1s".into(),
            purge_share: 0.9,
            steering: "anycast".into(),
            timeout: "1ms".into(),
            seed: 1,
        };
        let errors = args.validate().unwrap_err();
        let text = errors.to_string();
        for flag in [
            "--objects",
            "--zipf",
            "--concurrency",
            "--rate",
            "--duration",
            "--purge-share",
            "--steering",
            "--timeout",
        ] {
            assert!(text.contains(flag), "{flag} missing from {text}");
        }
        assert_eq!(errors.0.len(), 8);
    }

    #[test]
    fn paths_come_from_samples_shuffled_or_are_synthetic() {
        let w = WorkloadArgs {
            objects: Some(3),
            ..WorkloadArgs::default()
        }
        .validate()
        .unwrap();
        let samples: Vec<String> = (0..10).map(|i| format!("/s/{i}")).collect();
        let paths = w.paths(&samples).unwrap();
        assert_eq!(paths.len(), 3);
        assert!(paths.iter().all(|p| samples.contains(p)));
        assert_eq!(paths, w.paths(&samples).unwrap());
        assert_eq!(w.paths(&[]).unwrap()[2], "/bench/obj-2");
        let too_many = Workload {
            objects: Some(11),
            ..w
        };
        assert!(too_many.paths(&samples).unwrap_err().contains("only 10"));
    }
}
