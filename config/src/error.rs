use std::fmt;

/// One problem in a configuration, located by its key path (`cache.max_bytes`) and, when it was
/// found while parsing the text, its line.
///
/// Displayed key path first: `server.max_connections (line 3): invalid value: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path of the offending value; empty for whole-file problems (an unreadable
    /// file, a file of no role).
    pub path: String,
    /// 1-based line of the offending text. Parse errors (syntax, types, unknown or missing
    /// keys) have one; validation works on parsed values, which no longer know their line.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, None) => write!(f, "{}", self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
        }
    }
}

/// Every problem found in a configuration. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors {
            errors: vec![ConfigError {
                path: path.into(),
                line: None,
                message: message.into(),
            }],
        }
    }

    /// True when some error is reported at exactly this key path.
    pub fn mentions(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Collects errors while validating; each field is checked even after an earlier one failed.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    errors: Vec<ConfigError>,
}

impl Collector {
    pub(crate) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            line: None,
            message: message.into(),
        });
    }

    /// Errors collected so far.
    pub(crate) fn len(&self) -> usize {
        self.errors.len()
    }

    /// Keeps the value of a successful check, records the error of a failed one.
    pub(crate) fn take<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.push(path, message);
                None
            }
        }
    }

    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if self.errors.is_empty() => Err(ConfigErrors::single("", "invalid configuration")),
            _ => Err(ConfigErrors {
                errors: self.errors,
            }),
        }
    }
}
