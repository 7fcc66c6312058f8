//! API keys: `sk_` + base64url of 32 random bytes; stored only as a SHA-256 digest.
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub const ADMIN_ACCOUNT: &str = "admin";

pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("sk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256 of a key: what the store keeps and looks keys up by.
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
    fn keys() {
        let k = generate_key();
        assert!(k.starts_with("sk_") && k.len() == 46, "{k}");
        assert_ne!(generate_key(), k);
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(key_from_header("Bearer sk_x"), Some("sk_x"));
        assert_eq!(key_from_header("bearer   sk_x "), Some("sk_x"));
        assert_eq!(key_from_header("sk_x"), Some("sk_x"));
        assert_eq!(key_from_header("Basic abc"), None);
        assert_eq!(key_from_header("Bearer "), None);
        assert_eq!(key_from_header(""), None);
    }
}
