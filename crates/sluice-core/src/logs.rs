//! Worker and platform logs (R2.6, R7.2), the pure parts: reading the query's times and pattern,
//! cutting a stream of bytes into lines.
use crate::{Millis, billing::parse_time, error::FieldError};

/// Longest stored line; the rest is cut and marked.
pub const MAX_LINE: usize = 16 * 1024;

/// Where a line came from.
pub const STREAMS: [&str; 3] = ["stdout", "stderr", "platform"];

/// A time in a log query: `2026-11-24T10:00:00Z` or `2026-11-24`, Unix milliseconds, or an age
/// before `now` (`90s`, `10m`, `2h`, `7d`).
pub fn parse_when(field: &str, s: &str, now: Millis) -> Result<Millis, FieldError> {
    let bad = || FieldError::new(field, "is not a time (2026-11-24T10:00:00Z, Unix ms, or an age like 10m)");
    let s = s.trim();
    if let Some(t) = parse_time(s) {
        return Ok(t);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().map(Millis).map_err(|_| bad());
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    Ok(Millis(now.0.saturating_sub(n.saturating_mul(ms))))
}

/// `q` as a SQL `LIKE` pattern (with `\` as the escape): a substring, where `*` matches any run
/// of characters. `%`, `_` and `\` match themselves.
pub fn like_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.chars() {
        match c {
            '*' => p.push('%'),
            '%' | '_' | '\\' => {
                p.push('\\');
                p.push(c);
            }
            c => p.push(c),
        }
    }
    p.push('%');
    p
}

/// Whether `line` matches `q` as [`like_pattern`] reads it (case-insensitive for ASCII, like
/// SQLite's `LIKE`): the live stream filters with this, the store with `LIKE`.
pub fn matches(q: &str, line: &str) -> bool {
    let line = line.to_ascii_lowercase();
    let mut rest = line.as_str();
    let parts: Vec<String> = q.to_ascii_lowercase().split('*').map(str::to_owned).collect();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        match rest.find(part.as_str()) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Cuts `buf` into complete lines (without `\n` or a trailing `\r`), leaving an incomplete last
/// line in `buf`. Lines longer than [`MAX_LINE`] are cut there and marked; bytes that are not
/// UTF-8 are replaced.
pub fn split_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
        out.push(clip(&buf[start..start + pos]));
        start += pos + 1;
    }
    buf.drain(..start);
    // A line with no end in sight: emit what fits rather than buffer without bound.
    if buf.len() > MAX_LINE {
        out.push(clip(buf));
        buf.clear();
    }
    out
}

fn clip(b: &[u8]) -> String {
    let b = b.strip_suffix(b"\r").unwrap_or(b);
    if b.len() > MAX_LINE {
        let mut s = String::from_utf8_lossy(&b[..MAX_LINE]).into_owned();
        s.push_str(" …[cut]");
        s
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = Millis(1_800_000_000_000);
        assert_eq!(parse_when("since", "10m", now).unwrap(), Millis(now.0 - 600_000));
        assert_eq!(parse_when("since", "90s", now).unwrap(), Millis(now.0 - 90_000));
        assert_eq!(parse_when("since", "2h", now).unwrap(), Millis(now.0 - 7_200_000));
        assert_eq!(parse_when("since", "7d", now).unwrap(), Millis(now.0 - 7 * 86_400_000));
        assert_eq!(parse_when("since", "250ms", now).unwrap(), Millis(now.0 - 250));
        assert_eq!(parse_when("since", "1700000000000", now).unwrap(), Millis(1_700_000_000_000));
        assert_eq!(
            parse_when("until", "2026-11-24T00:00:00Z", now).unwrap(),
            parse_time("2026-11-24T00:00:00Z").unwrap()
        );
        assert_eq!(parse_when("since", "99999999d", now).unwrap(), Millis(0), "saturates at the epoch");
        for bad in ["", "m", "10", "10x", "-5m", "10 m", "2026-13-01", "yesterday", "1.5h"] {
            if bad == "10" {
                continue; // plain digits are Unix ms
            }
            let e = parse_when("since", bad, now).unwrap_err();
            assert_eq!(e.field, "since", "{bad}");
        }
    }

    #[test]
    fn patterns() {
        assert_eq!(like_pattern("error"), "%error%");
        assert_eq!(like_pattern("GET */health"), "%GET %/health%");
        assert_eq!(like_pattern("50%_done\\"), "%50\\%\\_done\\\\%");
        assert!(matches("error", "an ERROR here"));
        assert!(matches("GET */health", "GET /v1/health 200"));
        assert!(!matches("GET */health", "/health GET"));
        assert!(matches("", "anything"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "xaxbxcx"));
        assert!(!matches("a*b*c", "cba"));
        assert!(matches("50%", "at 50% now"));
    }

    #[test]
    fn lines() {
        let mut b = b"one\ntwo\r\nthr".to_vec();
        assert_eq!(split_lines(&mut b), vec!["one", "two"]);
        assert_eq!(b, b"thr");
        b.extend_from_slice(b"ee\n\n");
        assert_eq!(split_lines(&mut b), vec!["three", ""]);
        assert!(b.is_empty());
        let mut b = vec![0xff, b'x', b'\n'];
        assert_eq!(split_lines(&mut b), vec!["\u{fffd}x"]);
        let mut long = vec![b'a'; MAX_LINE + 10];
        long.push(b'\n');
        let got = split_lines(&mut long);
        assert_eq!(got.len(), 1);
        assert!(got[0].ends_with("…[cut]") && got[0].len() < MAX_LINE + 20);
        // No newline for longer than a line may be: emitted anyway.
        let mut endless = vec![b'z'; MAX_LINE + 1];
        assert_eq!(split_lines(&mut endless).len(), 1);
        assert!(endless.is_empty());
    }
}
