//! API keys: `sk_` + base64url of 32 random bytes; stored only as a SHA-256 digest.
use base64::Engine as _;

pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("sk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub use sluice_core::keys::{ADMIN_ACCOUNT, digest, key_from_header, prefix};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = generate_key();
        assert!(k.starts_with("sk_") && k.len() == 46, "{k}");
        assert_ne!(generate_key(), k);
        assert_eq!(digest(&k).len(), 64);
    }
}
