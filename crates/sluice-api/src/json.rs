//! Reading request bodies: JSON with the path of the offending field, and messages that
//! never repeat a submitted value.

/// Why a JSON body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The path of the offending field (`max_workers`, `env.A`, `network_volume.path`), when
    /// there is one.
    pub field: Option<String>,
    pub message: String,
    /// Malformed JSON (400) rather than well-formed JSON of the wrong shape (422).
    pub syntax: bool,
}

/// Parses a JSON body into `T`, reporting the path of the offending field on failure. Every body
/// of the API is a JSON object (serde would also read a struct from an array of its fields).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, JsonError> {
    if let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace())
        && *first != b'{'
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        return Err(JsonError { field: None, message: "the body must be a JSON object".into(), syntax: false });
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = matches!(inner.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof);
        // A top-level value of the wrong kind (an array, a string) has no field to name.
        let field =
            (!syntax && path != "." && path != "?" && !path.is_empty() && !path.starts_with('[')).then_some(path);
        JsonError { field, message: scrub(&inner.to_string()), syntax }
    })
}

/// A deserializer's message without the value it refused. serde quotes what it was given
/// (`invalid type: string "hf_…", expected a map`), and a body may carry secrets in any field, so
/// an error keeps what was wrong and what was expected, never the submitted value: `invalid type:
/// string, expected a map`. Field names (`unknown field `x``) are kept: the path names them anyway.
pub fn scrub(message: &str) -> String {
    // serde_json appends the position: " at line 1 column 17" (exactly that, at the very end).
    let position = |tail: &str| {
        let mut words = tail.split(' ');
        matches!(
            (words.next(), words.next(), words.next(), words.next(), words.next()),
            (Some("line"), Some(l), Some("column"), Some(c), None)
                if !l.is_empty() && !c.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && c.bytes().all(|b| b.is_ascii_digit())
        )
    };
    let (core, at) = match message.rfind(" at line ") {
        Some(i) if position(&message[i + 4..]) => message.split_at(i),
        _ => (message, ""),
    };
    // Deserializers of query strings put the key first (`limit: invalid digit found in string`):
    // the key is kept, what follows is cleaned like a whole message.
    const MARKERS: [&str; 7] = [
        "invalid type: ",
        "invalid value: ",
        "unknown variant ",
        "unknown field ",
        "missing field ",
        "duplicate field ",
        "invalid length ",
    ];
    let (head, core) = match MARKERS.iter().filter_map(|m| core.find(m)).min() {
        Some(i) if i > 0 && core[..i].ends_with(": ") && !core[..i].contains(['"', '`']) => core.split_at(i),
        _ => ("", core),
    };
    let kept = |prefix: &str, rest: &str| -> String {
        // `rest` is `<what was given>, expected <what we wanted>`; the given part is reduced to
        // its kind (`string`, `integer`, `map`), the expected part is ours.
        let (given, expected) = match rest.rfind(", expected ") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let kind = given.split(['"', '`', '\'']).next().unwrap_or("").trim();
        let kind = if kind.is_empty() { "value" } else { kind };
        match expected {
            Some(e) => format!("{prefix}{kind}, {e}"),
            None => format!("{prefix}{kind}"),
        }
    };
    let cleaned = if let Some(rest) = core.strip_prefix("invalid type: ") {
        kept("invalid type: ", rest)
    } else if let Some(rest) = core.strip_prefix("invalid value: ") {
        kept("invalid value: ", rest)
    } else if let Some(rest) = core.strip_prefix("unknown variant ") {
        match rest.rfind(", expected ") {
            Some(i) => format!("unknown variant, {}", &rest[i + 2..]),
            None => "unknown variant".to_owned(),
        }
    } else if ["unknown field ", "missing field ", "duplicate field ", "invalid length "]
        .iter()
        .any(|p| core.starts_with(p))
    {
        core.to_owned()
    } else {
        // Anything else (a custom message): quoted parts may be values, so they go.
        unquote(core)
    };
    format!("{head}{cleaned}{at}")
}

/// Replaces every `"…"` and `` `…` `` segment with `…`.
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut open: Option<char> = None;
    for c in s.chars() {
        match open {
            Some(q) if c == q => open = None,
            Some(_) => {}
            None if c == '"' || c == '`' => {
                open = Some(c);
                out.push('…');
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EndpointInput, KeyInput};

    #[test]
    fn json_errors_name_the_field() {
        let field = |body: &[u8]| parse_json::<EndpointInput>(body).unwrap_err().field;
        assert_eq!(field(br#"{"name":"x","bogus":1}"#).as_deref(), Some("bogus"));
        assert_eq!(field(br#"{"name":"x","max_workers":"3"}"#).as_deref(), Some("max_workers"));
        assert_eq!(field(br#"{"network_volume":{"name":"v","mount":"/x"}}"#).as_deref(), Some("network_volume.mount"));
        assert_eq!(field(br#"{"env":{"A":1}}"#).as_deref(), Some("env.A"));
        assert_eq!(field(b"[1,2]"), None);
        let e = parse_json::<EndpointInput>(b"{not json").unwrap_err();
        assert!(e.syntax && e.field.is_none());
        let e = parse_json::<EndpointInput>(b"[1]").unwrap_err();
        assert!(!e.syntax);
        // A struct is never read from an array of its fields.
        let e = parse_json::<KeyInput>(b"[null, null]").unwrap_err();
        assert_eq!((e.syntax, e.message.as_str()), (false, "the body must be a JSON object"));
        assert!(parse_json::<KeyInput>(b" [null").unwrap_err().syntax, "malformed stays a syntax error");
        let ok = parse_json::<EndpointInput>(br#"{"name":"x","max_workers":3}"#).unwrap();
        assert_eq!(ok.max_workers, Some(3));
    }

    #[test]
    fn json_errors_never_repeat_a_submitted_value() {
        let secret = "hf_SECRETsecret0123456789";
        let bodies = [
            format!(r#"{{"name":"x","env":"HF_TOKEN={secret}"}}"#),
            format!(r#"{{"name":"x","registry_auth":"user:{secret}"}}"#),
            format!(r#"{{"name":"x","max_workers":"{secret}"}}"#),
            format!(r#"{{"name":"x","public":"{secret}"}}"#),
            format!(r#"{{"name":"x","network_volume":"{secret}"}}"#),
            format!(r#"{{"name":"x","env":{{"A":["{secret}"]}}}}"#),
            format!(r#"{{"name":["{secret}"]}}"#),
            format!(r#"["{secret}"]"#),
            format!(r#""{secret}""#),
            format!(r#"{{"name":"x","registry_auth":{{"server":"s","username":"u","password":7,"x":"{secret}"}}}}"#),
        ];
        for b in &bodies {
            let e = parse_json::<EndpointInput>(b.as_bytes()).unwrap_err();
            assert!(!e.message.contains("SECRET"), "{b} -> {}", e.message);
            assert!(!e.message.is_empty());
        }
        // What is kept: the kind given and what was expected, where it is.
        let e = parse_json::<EndpointInput>(bodies[0].as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("env"));
        assert!(e.message.starts_with("invalid type: string, expected a map at line 1"), "{}", e.message);
        for (raw, clean) in [
            ("invalid type: string \"a, expected b\", expected u32", "invalid type: string, expected u32"),
            ("invalid value: integer `4294967296`, expected u32", "invalid value: integer, expected u32"),
            (
                "unknown variant `s3cr3t`, expected one of `http`, `queue`",
                "unknown variant, expected one of `http`, `queue`",
            ),
            ("unknown field `bogus`, expected `name`", "unknown field `bogus`, expected `name`"),
            ("invalid type: map, expected a string", "invalid type: map, expected a string"),
            ("something \"quoted\" here", "something … here"),
            ("limit: invalid digit found in string", "limit: invalid digit found in string"),
            (
                "invalid type: string \"x at line 1 column 2 secret\", expected u32",
                "invalid type: string, expected u32",
            ),
            ("custom \"v at line 3 column 4\"", "custom …"),
            (
                "x-y: unknown field `x-y`, expected `limit` or `before`",
                "x-y: unknown field `x-y`, expected `limit` or `before`",
            ),
            ("stream: invalid value: string \"s3cr3t\", expected x", "stream: invalid value: string, expected x"),
        ] {
            assert_eq!(scrub(raw), clean);
        }
    }
}
