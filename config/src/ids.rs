//! Identifier newtypes, so a node id can never be passed where a region is expected.

use std::fmt;

/// Checks an identifier: 1 to 64 characters of ASCII letters, digits, `-`, `_` and `.`.
pub(crate) fn check_id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 64 {
        return Err(format!("{value:?} is longer than 64 characters"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{value:?} contains {c:?}; use ASCII letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                check_id(&value).map(|()| $name(value))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            pub fn new(value: &str) -> Result<Self, String> {
                check_id(value).map(|()| $name(value.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The id of one node (edge or shield), unique within a deployment.
    NodeId
);
id_type!(
    /// The id of a region (`us`, `eu`, `ap`).
    RegionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_plain_names_and_reject_others() {
        assert!(NodeId::new("us-edge-1").is_ok());
        assert!(RegionId::new("eu.west_2").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(RegionId::new(&"x".repeat(65)).is_err());
    }
}
