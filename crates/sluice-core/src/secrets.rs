//! Masking of environment values that look like secrets (R1.6): the API, logs and UI show only
//! a short prefix of them.

const SECRET_NAME_PARTS: &[&str] = &[
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "SIGNATURE",
    "COOKIE",
    "SESSION",
];
const SECRET_VALUE_PREFIXES: &[&str] =
    &["sk-", "sk_", "hf_", "ghp_", "gho_", "github_pat_", "xoxb-", "xoxp-", "AKIA", "glpat-", "rpa_", "eyJ"];

/// Whether a variable looks like it holds a secret, by its name or by the shape of its value.
pub fn looks_secret(name: &str, value: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if SECRET_NAME_PARTS.iter().any(|p| upper.split('_').any(|w| w == *p) || upper.ends_with(p)) {
        return true;
    }
    if SECRET_VALUE_PREFIXES.iter().any(|p| value.starts_with(p)) {
        return true;
    }
    // A long token of mixed letters and digits with no spaces reads as a credential.
    value.len() >= 32
        && !value.contains(char::is_whitespace)
        && !value.contains('/')
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_lowercase())
        && value.chars().any(|c| c.is_ascii_uppercase())
}

/// The masked form: at most four leading characters (none for short values), then `****`.
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    let shown = if n >= 12 { 4 } else { 0 };
    let prefix: String = value.chars().take(shown).collect();
    format!("{prefix}****")
}

/// The value as the API may show it.
pub fn display_value(name: &str, value: &str) -> String {
    if looks_secret(name, value) { mask(value) } else { value.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        for (n, v, secret) in [
            ("HF_TOKEN", "abc", true),
            ("OPENAI_API_KEY", "x", true),
            ("DB_PASSWORD", "hunter2", true),
            ("AWS_SECRET_ACCESS_KEY", "x", true),
            ("MODEL_NAME", "meta-llama/Llama-3-8B", false),
            ("MAX_TOKENS_PER_BATCH", "4096", false),
            ("KEYBOARD", "us", false),
            ("UPSTREAM", "sk-abcdef", true),
            ("X", "hf_abcdefgh", true),
            ("X", "Zx8Kq2Lm9Np4Rs7Tv1Wy3Ab5Cd6Ef0Gh", true),
            ("PATH_PREFIX", "/usr/local/bin:/usr/bin:/bin/with/long/path", false),
            ("GREETING", "hello world this is a long plain sentence", false),
        ] {
            assert_eq!(looks_secret(n, v), secret, "{n}={v}");
        }
    }

    #[test]
    fn masking_never_reveals_short_values() {
        assert_eq!(mask("hunter2"), "****");
        assert_eq!(mask("hf_abcdefghijklmnop"), "hf_a****");
        assert_eq!(display_value("HF_TOKEN", "hf_abcdefghijklmnop"), "hf_a****");
        assert_eq!(display_value("MODEL", "llama"), "llama");
    }
}
