//! Identifiers. Endpoint and worker ids are short lowercase alphanumerics that start with a
//! letter, so they are valid DNS labels and can appear in `{endpoint_id}.{dc}.{domain}`.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::FieldError;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Length of generated ids (the first character is always a letter).
pub const GENERATED_ID_LEN: usize = 12;

/// Encodes random bytes as an id: a letter, then base-36 characters. Callers supply entropy.
fn encode(entropy: [u8; 16]) -> String {
    let mut n = u128::from_le_bytes(entropy);
    let mut s = String::with_capacity(GENERATED_ID_LEN);
    s.push(ALPHABET[(n % 26) as usize] as char);
    n /= 26;
    for _ in 1..GENERATED_ID_LEN {
        s.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    s
}

/// Checks that `s` is a DNS label of our id form: 1–63 chars of `[a-z0-9-]`, starting with a
/// letter, not ending with `-`.
pub fn is_id_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Checks that `s` is a DNS host name: dot-separated labels of `[A-Za-z0-9-]` (1–63 chars, not
/// starting or ending with `-`), at most 253 chars in all.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn generate(entropy: [u8; 16]) -> Self {
                $name(encode(entropy))
            }
            pub fn parse(s: &str) -> Result<Self, FieldError> {
                if is_id_label(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(FieldError::new(
                        "id",
                        format!(
                            concat!(
                                "'{}' is not a valid ",
                                $what,
                                " id (lowercase letters, digits and '-', starting with a letter)"
                            ),
                            s
                        ),
                    ))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, FieldError> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(EndpointId, "endpoint");
id_type!(WorkerId, "worker");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_dns_labels() {
        for seed in 0u8..=255 {
            let mut e = [seed; 16];
            e[3] = seed.wrapping_mul(7);
            let id = EndpointId::generate(e);
            assert_eq!(id.as_str().len(), GENERATED_ID_LEN);
            assert!(is_id_label(id.as_str()), "{id}");
        }
    }

    #[test]
    fn parse_rejects_non_labels() {
        for bad in ["", "A", "1abc", "ab_c", "abc-", "ab.c", &"a".repeat(64), "é"] {
            assert!(EndpointId::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "abc123", "a-b", &"a".repeat(63)] {
            assert!(EndpointId::parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn dns_names() {
        for (name, ok) in [
            ("api.example.com", true),
            ("API.Example.com", true),
            ("localhost", true),
            ("a-b.c1", true),
            ("", false),
            ("a..b", false),
            ("-a.b", false),
            ("a-.b", false),
            ("a_b.c", false),
            ("*.example.com", false),
            ("a.b/c", false),
        ] {
            assert_eq!(is_dns_name(name), ok, "{name:?}");
        }
        assert!(!is_dns_name(&format!("{}.com", "a".repeat(64))));
    }
}
