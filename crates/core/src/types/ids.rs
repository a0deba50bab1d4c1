//! Validated ids (CONTRACT, "Ids").

use std::{borrow::Borrow, fmt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// The longest id, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// Checks the id rule: 1 to 1024 bytes of UTF-8 without NUL.
pub(crate) fn check_id(kind: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{kind} must not be empty")));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "{kind} is {} bytes long; the limit is {MAX_ID_BYTES}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Error::invalid(format!("{kind} must not contain NUL")));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` (1 to 1024 bytes, no NUL).
            ///
            /// # Errors
            /// [`Error::InvalidInput`] naming the rule it breaks.
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                check_id($kind, &value)?;
                Ok(Self(value))
            }

            /// The id exactly as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(value: &str) -> Result<Self> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(value: &str) -> Result<Self> {
                Self::new(value)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The id of a run: names a stream within a tenant.
    RunId,
    "run_id"
);
id_type!(
    /// The id of an event: the idempotency key within a stream (CONTRACT §2).
    EventId,
    "event_id"
);
id_type!(
    /// The id of a snapshot within a stream (CONTRACT §12).
    SnapshotId,
    "snapshot_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_any_utf8_without_nul() {
        for ok in [
            "a",
            "../a",
            "A",
            "CON",
            "with space",
            "🦀",
            &"x".repeat(1024),
        ] {
            assert_eq!(RunId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn ids_reject_empty_long_and_nul() {
        for bad in ["", "a\0b", &"x".repeat(1025)] {
            assert!(matches!(EventId::new(bad), Err(Error::InvalidInput { .. })));
        }
        assert!(serde_json::from_str::<SnapshotId>("\"\"").is_err());
    }
}
