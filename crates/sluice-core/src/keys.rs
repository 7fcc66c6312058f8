//! API key arithmetic shared by the control API and the gateway (pure): the digest a key is
//! stored and looked up by, and the key in an `Authorization` header.
use sha2::{Digest, Sha256};

/// The operator's account: its keys act on every account.
pub const ADMIN_ACCOUNT: &str = "admin";

/// Hex SHA-256 of a key: what the store keeps and what the gateway compares.
pub fn digest(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The displayable prefix of a key.
pub fn prefix(key: &str) -> String {
    key.chars().take(8).collect()
}

/// The key in an `Authorization` header: `Bearer KEY`, or the bare key as RunPod clients send it.
pub fn key_from_header(value: &str) -> Option<&str> {
    let v = value.trim();
    let key = match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None if v.eq_ignore_ascii_case("bearer") => return None,
        None => v,
    };
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_headers() {
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(prefix("sk_abcdefgh"), "sk_abcde");
        assert_eq!(key_from_header("Bearer sk_x"), Some("sk_x"));
        assert_eq!(key_from_header("bearer   sk_x "), Some("sk_x"));
        assert_eq!(key_from_header("sk_x"), Some("sk_x"));
        assert_eq!(key_from_header("Basic abc"), None);
        assert_eq!(key_from_header("Bearer "), None);
        assert_eq!(key_from_header(""), None);
    }
}
