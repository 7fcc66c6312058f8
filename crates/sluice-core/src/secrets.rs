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
    // A long token of mixed letters and digits with no spaces reads as a credential. One with
    // `/` reads as one only when it is all base64 (`wJalr…/K7MDENG/…`): paths and model ids
    // (`mistralai/Mistral-7B-Instruct-v0.2`) have `-`, `.` or `:` as well.
    let base64 = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    value.len() >= 32
        && !value.contains(char::is_whitespace)
        && (!value.contains('/') || (base64 && !value.starts_with('/')))
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

/// The value as the API may show it: masked whole when the variable looks secret, and in any
/// case with the credentials of every URL in it masked (`postgres://app:****@db/app`), whatever
/// the variable is called.
pub fn display_value(name: &str, value: &str) -> String {
    if looks_secret(name, value) { mask(value) } else { mask_url_credentials(value) }
}

/// Query parameters whose values are credentials in URLs (pre-signed URLs, tokens in links).
const SECRET_QUERY_PARTS: &[&str] =
    &["key", "token", "secret", "password", "passwd", "pass", "sig", "signature", "credential", "auth", "session"];

/// Masks the credentials of every URL-shaped part of `value`: the password of `user:password@`
/// (or the whole user part when it has no password: a token as user name), and the values of
/// query parameters named like credentials (`?token=…`, `X-Amz-Signature=…`).
pub fn mask_url_credentials(value: &str) -> String {
    if !value.contains("://") {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The URL runs to the next whitespace or quote.
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == '>')
            .unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        out.push_str(&mask_one_url(url));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `url` is what follows `scheme://`.
fn mask_one_url(url: &str) -> String {
    // The authority ends at the first `/`, `?` or `#`, unless a password holds one of those: a
    // `user:…@` before the path is taken whole (masking too much is the safe side).
    let plain_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let auth_end = match url.rfind('@') {
        Some(at) if at > plain_end && url[..at].contains(':') && !url[..plain_end].contains('@') => {
            url[at..].find(['/', '?', '#']).map_or(url.len(), |i| at + i)
        }
        _ => plain_end,
    };
    let (authority, path) = url.split_at(auth_end);
    let mut out = String::with_capacity(url.len());
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":****");
                }
                None => out.push_str("****"),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    match path.split_once('?') {
        Some((p, query)) => {
            out.push_str(p);
            out.push('?');
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let parts: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !v.is_empty() && secret_query_name(k) => format!("{k}=****"),
                    _ => kv.to_owned(),
                })
                .collect();
            out.push_str(&parts.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
        }
        None => out.push_str(path),
    }
    out
}

fn secret_query_name(k: &str) -> bool {
    let lower = k.to_ascii_lowercase();
    lower.split(['_', '-', '.']).any(|w| SECRET_QUERY_PARTS.contains(&w))
        || SECRET_QUERY_PARTS.iter().any(|p| lower.ends_with(p))
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
            ("AWS_ACCESS", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", true),
            ("MODEL_ID", "mistralai/Mistral-7B-Instruct-v0.2-extra-long", false),
            ("ROOT", "/Abcdefghijklmnop1234567890ABCDEFGHIJ", false),
            ("GREETING", "hello world this is a long plain sentence", false),
        ] {
            assert_eq!(looks_secret(n, v), secret, "{n}={v}");
        }
    }

    #[test]
    fn credentials_in_urls_are_masked_whatever_the_name() {
        for (name, value, shown) in [
            ("DATABASE_URL", "postgres://app:hunter2@db:5432/app", "postgres://app:****@db:5432/app"),
            ("DSN", "redis://:pw@cache:6379/0", "redis://:****@cache:6379/0"),
            ("REPO", "https://ghp_abc123@github.com/org/repo.git", "https://****@github.com/org/repo.git"),
            (
                "MODEL_URL",
                "https://example.com/w.bin?X-Amz-Signature=abc&v=1",
                "https://example.com/w.bin?X-Amz-Signature=****&v=1",
            ),
            ("LINK", "https://h/p?access_token=t0k#frag", "https://h/p?access_token=****#frag"),
            ("URLS", "a http://u:p@h1/x b mysql://v:q@h2", "a http://u:****@h1/x b mysql://v:****@h2"),
            ("HOME_PAGE", "https://example.com/docs?page=2", "https://example.com/docs?page=2"),
            ("PLAIN", "no url here", "no url here"),
            ("EMAIL", "mailto:someone@example.com", "mailto:someone@example.com"),
            ("AT_IN_PATH", "https://example.com/@user/x", "https://example.com/@user/x"),
            ("SLASH_PW", "postgres://app:pa/ss@db/app", "postgres://app:****@db/app"),
            ("HASH_PW", "redis://:p#ss?x@h:6379/0", "redis://:****@h:6379/0"),
        ] {
            let got = display_value(name, value);
            assert_eq!(got, shown, "{name}");
        }
        // Nothing of the password survives in any view.
        assert!(!display_value("DATABASE_URL", "postgres://app:s3cr3t@db/app").contains("s3cr3t"));
    }

    #[test]
    fn masking_never_reveals_short_values() {
        assert_eq!(mask("hunter2"), "****");
        assert_eq!(mask("hf_abcdefghijklmnop"), "hf_a****");
        assert_eq!(display_value("HF_TOKEN", "hf_abcdefghijklmnop"), "hf_a****");
        assert_eq!(display_value("MODEL", "llama"), "llama");
    }
}
