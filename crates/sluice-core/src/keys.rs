//! API key arithmetic shared by the control API and the gateway (pure): the digest a key is
//! stored and looked up by, and the key in an `Authorization` header.
use sha2::{Digest, Sha256};

/// The operator's account: its keys act on every account.
pub const ADMIN_ACCOUNT: &str = "admin";

/// What a caller may see and change: everything (the admin, and the platform's own loops), or
/// the things of one account. Every listing the API serves takes one, so a view cannot be built
/// without saying whose things it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Account(String),
}

impl Scope {
    /// The scope of a key of `account` with `role`.
    pub fn of_key(account: &str, role: &str) -> Scope {
        if role == "admin" { Scope::All } else { Scope::Account(account.to_owned()) }
    }

    /// Whether something owned by `owner` is visible in this scope.
    pub fn admits(&self, owner: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Account(a) => a == owner,
        }
    }

    /// The one account this scope is limited to (`None`: every account).
    pub fn account(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Account(a) => Some(a),
        }
    }
}

/// How a live key's reach travels with the routing table (and in any in-memory key map): its
/// account, or [`ALL_ACCOUNTS`] for an admin-role key (whatever account holds it). Account
/// names are DNS labels, so the marker cannot be one.
pub fn scope_label<'a>(account: &'a str, role: &str) -> &'a str {
    if role == "admin" { ALL_ACCOUNTS } else { account }
}

/// The scope label of admin-role keys.
pub const ALL_ACCOUNTS: &str = "*";

/// Whether a key with scope label `label` (see [`scope_label`]) may use a thing of `owner`.
pub fn label_admits(label: &str, owner: &str) -> bool {
    label == ALL_ACCOUNTS || label == owner
}

/// SHA-256 of a key (the gateway compares these, per request, without allocating).
pub fn digest_bytes(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Hex SHA-256 of a key: what the store keeps.
pub fn digest(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in digest_bytes(key) {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// The bytes of a hex digest as [`digest`] writes it.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nib(b[2 * i])? << 4 | nib(b[2 * i + 1])?;
    }
    Some(out)
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
        assert_eq!(parse_digest(&digest("abc")), Some(digest_bytes("abc")));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
        assert_eq!(prefix("sk_abcdefgh"), "sk_abcde");
        assert_eq!(key_from_header("Bearer sk_x"), Some("sk_x"));
        assert_eq!(key_from_header("bearer   sk_x "), Some("sk_x"));
        assert_eq!(key_from_header("sk_x"), Some("sk_x"));
        assert_eq!(key_from_header("Basic abc"), None);
        assert_eq!(key_from_header("Bearer "), None);
        assert_eq!(key_from_header(""), None);
    }
}
