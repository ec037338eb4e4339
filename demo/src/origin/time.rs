//! How long the sample origin takes to answer a fetch: an origin server does work for each
//! request (a database, a disk, an application), and how long that takes varies, with a long
//! tail. The time is drawn from a log-normal law given by its median and its 99th percentile,
//! the way origin response times are usually described; `0` is an origin that answers at once.
//!
//! Written `MEDIAN/P99` (`2ms/20ms`), `TIME` (always that long) or `0`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest time the sample origin may be asked to take (its 99th percentile).
pub const MAX_SERVICE_TIME: Duration = Duration::from_secs(10);

/// The standard normal law's 99th percentile.
const Z_99: f64 = 2.326_347_874_040_841;

/// How long the sample origin takes to answer each fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceTime {
    median: Duration,
    p99: Duration,
}

impl ServiceTime {
    /// An origin that answers at once.
    pub const INSTANT: ServiceTime = ServiceTime {
        median: Duration::ZERO,
        p99: Duration::ZERO,
    };

    /// The demo's default: an origin in a data centre doing a little work per request, 2 ms
    /// half the time and 20 ms or more one time in a hundred.
    pub const DEFAULT: ServiceTime = ServiceTime {
        median: Duration::from_millis(2),
        p99: Duration::from_millis(20),
    };

    /// A time with this median and 99th percentile; refused unless
    /// `median <= p99 <= MAX_SERVICE_TIME`, and a zero median with a non-zero p99.
    pub fn new(median: Duration, p99: Duration) -> Result<ServiceTime, String> {
        if p99 > MAX_SERVICE_TIME {
            return Err(format!(
                "the 99th percentile must be at most {}ms",
                MAX_SERVICE_TIME.as_millis()
            ));
        }
        if median > p99 {
            return Err(format!(
                "the median ({}) must not exceed the 99th percentile ({})",
                millis(median),
                millis(p99)
            ));
        }
        if median.is_zero() && !p99.is_zero() {
            return Err("a median of 0 needs a 99th percentile of 0".to_string());
        }
        Ok(ServiceTime { median, p99 })
    }

    pub fn median(&self) -> Duration {
        self.median
    }

    pub fn p99(&self) -> Duration {
        self.p99
    }

    pub fn is_instant(&self) -> bool {
        self.p99.is_zero()
    }

    /// One request's time, from `rng`: `median · e^(σ·z)` for a standard normal `z`, with `σ`
    /// such that the 99th percentile is `p99`; never above [`MAX_SERVICE_TIME`] twice over.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        if self.median == self.p99 {
            return self.median;
        }
        let sigma = (self.p99.as_secs_f64() / self.median.as_secs_f64()).ln() / Z_99;
        let seconds = self.median.as_secs_f64() * (sigma * standard_normal(rng)).exp();
        Duration::from_secs_f64(seconds.min(2.0 * MAX_SERVICE_TIME.as_secs_f64()))
    }
}

impl Default for ServiceTime {
    fn default() -> ServiceTime {
        ServiceTime::DEFAULT
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    // 1 - f64() lies in (0, 1]: its logarithm is finite.
    let radius = (-2.0 * (1.0 - rng.f64()).ln()).sqrt();
    radius * (std::f64::consts::TAU * rng.f64()).cos()
}

impl FromStr for ServiceTime {
    type Err = String;

    fn from_str(text: &str) -> Result<ServiceTime, String> {
        let duration = |part: &str, what: &str| {
            verge_config::parse_duration(part.trim()).map_err(|e| format!("{what}: {e}"))
        };
        let text = text.trim();
        if text == "0" {
            return Ok(ServiceTime::INSTANT);
        }
        match text.split_once('/') {
            Some((median, p99)) => ServiceTime::new(
                duration(median, "median")?,
                duration(p99, "99th percentile")?,
            ),
            None => {
                let fixed = duration(text, "time")?;
                ServiceTime::new(fixed, fixed)
            }
        }
    }
}

impl fmt::Display for ServiceTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_instant() {
            f.write_str("instant")
        } else if self.median == self.p99 {
            f.write_str(&millis(self.median))
        } else {
            write!(
                f,
                "{} median, {} p99",
                millis(self.median),
                millis(self.p99)
            )
        }
    }
}

/// A duration in milliseconds, as short as it can be said.
fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms.fract() == 0.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_written_forms_read_as_median_and_p99() {
        let cases = [
            ("2ms/20ms", Ok((ms(2), ms(20)))),
            (" 1ms / 3ms ", Ok((ms(1), ms(3)))),
            ("5ms", Ok((ms(5), ms(5)))),
            ("0", Ok((ms(0), ms(0)))),
            ("0s", Ok((ms(0), ms(0)))),
        ];
        for (text, want) in cases {
            let got = text.parse::<ServiceTime>().map(|t| (t.median(), t.p99()));
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn bad_forms_are_refused_naming_what_is_wrong() {
        let cases = [
            ("20ms/2ms", "must not exceed"),
            ("0ms/5ms", "median of 0"),
            ("2ms/11s", "at most 10000ms"),
            ("fast", "time:"),
            ("2ms/", "99th percentile:"),
            ("/2ms", "median:"),
            ("-3ms", "time:"),
        ];
        for (text, want) in cases {
            let error = text.parse::<ServiceTime>().unwrap_err();
            assert!(error.contains(want), "{text:?}: {error}");
        }
    }

    #[test]
    fn draws_have_the_median_and_99th_percentile_asked_for() {
        let time = ServiceTime::new(ms(2), ms(20)).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut draws: Vec<Duration> = (0..20_000).map(|_| time.sample(&mut rng)).collect();
        draws.sort();
        let at = |q: f64| draws[(q * draws.len() as f64) as usize].as_secs_f64() * 1000.0;
        assert!((at(0.5) - 2.0).abs() < 0.1, "median {}", at(0.5));
        assert!((at(0.99) - 20.0).abs() < 2.0, "p99 {}", at(0.99));
    }

    #[test]
    fn a_fixed_time_and_instant_are_always_the_same() {
        let mut rng = fastrand::Rng::with_seed(1);
        let fixed: ServiceTime = "5ms".parse().unwrap();
        assert!((0..100).all(|_| fixed.sample(&mut rng) == ms(5)));
        assert!((0..100).all(|_| ServiceTime::INSTANT.sample(&mut rng).is_zero()));
    }

    #[test]
    fn it_is_said_as_it_is_written() {
        assert_eq!(ServiceTime::DEFAULT.to_string(), "2 ms median, 20 ms p99");
        assert_eq!("5ms".parse::<ServiceTime>().unwrap().to_string(), "5 ms");
        assert_eq!(ServiceTime::INSTANT.to_string(), "instant");
        let fraction = ServiceTime::new(Duration::from_micros(500), ms(1)).unwrap();
        assert_eq!(fraction.to_string(), "0.5 ms median, 1 ms p99");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_read_or_refused_without_panic(text in "\\PC{0,24}") {
            if let Ok(time) = text.parse::<ServiceTime>() {
                proptest::prop_assert!(time.median() <= time.p99());
                proptest::prop_assert!(time.p99() <= MAX_SERVICE_TIME);
            }
        }

        #[test]
        fn any_valid_time_draws_bounded_finite_times(
            median_us in 1u64..10_000_000,
            spread in 1.0f64..1000.0,
            seed: u64,
        ) {
            let p99 = Duration::from_micros(median_us)
                .mul_f64(spread)
                .min(MAX_SERVICE_TIME);
            let median = Duration::from_micros(median_us).min(p99);
            let time = ServiceTime::new(median, p99).unwrap();
            let mut rng = fastrand::Rng::with_seed(seed);
            for _ in 0..32 {
                proptest::prop_assert!(time.sample(&mut rng) <= 2 * MAX_SERVICE_TIME);
            }
        }
    }
}
