//! Certificates, the pure parts (R1.9): which hosts need one, which certificate serves a host
//! (RFC 6125 wildcard matching), when a certificate is due for renewal, and how long to wait
//! after a failed issuance. The ACME client, the files and the TLS stacks are at the edges.
use crate::Millis;

/// Whether a certificate name (`example.com`, `*.local.example.com`) covers `host`. A wildcard
/// stands for exactly one whole label, the leftmost one (RFC 6125 6.4.3: `*.a.b` covers `x.a.b`,
/// not `a.b` nor `y.x.a.b`); names compare without case and without a trailing dot.
pub fn name_covers(name: &str, host: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    let (name, host) = (norm(name), norm(host));
    if name.is_empty() || host.is_empty() {
        return false;
    }
    match name.strip_prefix("*.") {
        Some(rest) => match host.split_once('.') {
            Some((first, tail)) => !first.is_empty() && tail == rest && !rest.is_empty() && rest.contains('.'),
            None => false,
        },
        None => name == host,
    }
}

/// The best of several certificates' names for `host`: an exact name wins over a wildcard.
/// Returns the index of the certificate, among `certs` (each a list of names).
pub fn pick_certificate<'a>(certs: impl IntoIterator<Item = &'a [String]>, host: &str) -> Option<usize> {
    let mut wildcard = None;
    for (i, names) in certs.into_iter().enumerate() {
        for n in names {
            if !name_covers(n, host) {
                continue;
            }
            if n.starts_with("*.") {
                wildcard.get_or_insert(i);
            } else {
                return Some(i);
            }
        }
    }
    wildcard
}

/// The host an endpoint is reached at: `{id}.{data_center}.{domain}`.
pub fn endpoint_host(id: &str, data_center: &str, domain: &str) -> String {
    format!("{id}.{data_center}.{domain}")
}

/// The wildcard that covers every endpoint of a data center: `*.{data_center}.{domain}`.
pub fn data_center_wildcard(data_center: &str, domain: &str) -> String {
    format!("*.{data_center}.{domain}")
}

/// How endpoint hosts get their certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPolicy {
    /// One certificate per endpoint host, issued when the endpoint is created (HTTP-01 or
    /// TLS-ALPN-01; a public CA's per-domain rate limits apply).
    PerHost,
    /// One wildcard per data center (`*.{dc}.{domain}`, DNS-01): new endpoints need nothing.
    WildcardPerDataCenter,
}

/// A certificate the platform should hold: the host it is kept under and the names it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub host: String,
    pub names: Vec<String>,
}

impl Wanted {
    fn one(name: String) -> Wanted {
        Wanted { host: name.clone(), names: vec![name] }
    }
    /// Whether it is a wildcard (only DNS-01 can prove those).
    pub fn is_wildcard(&self) -> bool {
        self.names.iter().any(|n| n.starts_with("*."))
    }
}

/// The certificates wanted: the API host's, and per `policy` each endpoint's host or each data
/// center's wildcard, leaving out what `covered` (certificates from files) already serves.
/// `endpoints`: (id, data center). Sorted by host, no duplicates.
pub fn wanted(
    endpoints: &[(String, String)],
    data_centers: &[String],
    api_host: Option<&str>,
    domain: &str,
    policy: HostPolicy,
    covered: impl Fn(&str) -> bool,
) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = Vec::new();
    if let Some(h) = api_host.filter(|h| !covered(h)) {
        out.push(Wanted::one(h.to_ascii_lowercase()));
    }
    match policy {
        HostPolicy::PerHost => {
            for (id, dc) in endpoints {
                let host = endpoint_host(id, dc, domain).to_ascii_lowercase();
                if !covered(&host) {
                    out.push(Wanted::one(host));
                }
            }
        }
        HostPolicy::WildcardPerDataCenter => {
            for dc in data_centers {
                let w = data_center_wildcard(dc, domain).to_ascii_lowercase();
                if !covered(&w) {
                    out.push(Wanted::one(w));
                }
            }
        }
    }
    out.sort_by(|a, b| a.host.cmp(&b.host));
    out.dedup_by(|a, b| a.host == b.host);
    out
}

/// When a certificate valid from `not_before` to `not_after` is due for renewal: at two thirds
/// of its lifetime (Let's Encrypt's 90 days: 30 days before it expires).
pub fn renew_at(not_before: Millis, not_after: Millis) -> Millis {
    let life = not_after.saturating_sub(not_before);
    Millis(not_before.0.saturating_add(life * 2 / 3))
}

/// How long to wait after `failures` failed attempts in a row before the next: 10 s, doubling,
/// at most 6 hours (well inside a CA's rate limits: Let's Encrypt allows 5 failed validations
/// per host per hour).
pub fn retry_after_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    (10_000u64 << (failures - 1).min(20)).min(6 * 3_600_000)
}

/// Where a host's certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Wanted, not issued yet (or the last attempt failed and the next is scheduled).
    Pending,
    /// Issued and valid.
    Valid,
    /// The last attempt failed; `last_error` says why.
    Failed,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Pending => "pending",
            CertState::Valid => "valid",
            CertState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [CertState::Pending, CertState::Valid, CertState::Failed].into_iter().find(|c| c.as_str() == s)
    }
}

/// What is known of one managed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub state: CertState,
    /// The validity of the certificate held (an old one keeps serving while a renewal fails).
    pub validity: Option<(Millis, Millis)>,
    pub failures: u32,
    pub last_attempt: Option<Millis>,
}

/// What to do about one managed certificate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing until then.
    Wait(Millis),
    /// Issue (or renew) it now.
    Issue,
}

/// The decision for one certificate: issue when there is none, renew at two thirds of its
/// lifetime, and after a failure wait out the back-off first.
pub fn due(m: &Managed, now: Millis) -> Due {
    let retry = m.last_attempt.map(|t| Millis(t.0.saturating_add(retry_after_ms(m.failures))));
    let wanted = match m.validity {
        None => now,
        Some((nb, na)) => renew_at(nb, na),
    };
    let at = match retry {
        Some(r) if m.failures > 0 => wanted.max(r),
        _ => wanted,
    };
    if at <= now { Due::Issue } else { Due::Wait(at) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_exactly_one_leftmost_label() {
        for (name, host, covers) in [
            ("api.example.com", "api.example.com", true),
            ("API.Example.COM.", "api.example.com", true),
            ("api.example.com", "www.example.com", false),
            ("*.local.example.com", "abc.local.example.com", true),
            ("*.local.example.com", "ABC.local.example.com.", true),
            ("*.local.example.com", "local.example.com", false),
            ("*.local.example.com", "x.abc.local.example.com", false),
            ("*.local.example.com", ".local.example.com", false),
            ("*.com", "example.com", false),
            ("*", "example", false),
            ("", "example.com", false),
            ("*.local.example.com", "abc.other.example.com", false),
        ] {
            assert_eq!(name_covers(name, host), covers, "{name} {host}");
        }
        let certs = [vec!["*.local.example.com".to_owned()], vec!["abc.local.example.com".to_owned()]];
        assert_eq!(pick_certificate(certs.iter().map(Vec::as_slice), "abc.local.example.com"), Some(1), "exact wins");
        assert_eq!(pick_certificate(certs.iter().map(Vec::as_slice), "xyz.local.example.com"), Some(0));
        assert_eq!(pick_certificate(certs.iter().map(Vec::as_slice), "api.example.com"), None);
    }

    #[test]
    fn renewal_at_two_thirds_and_back_off_after_failures() {
        let day = 86_400_000;
        assert_eq!(renew_at(Millis(0), Millis(90 * day)), Millis(60 * day));
        assert_eq!(retry_after_ms(0), 0);
        assert_eq!(retry_after_ms(1), 10_000);
        assert_eq!(retry_after_ms(2), 20_000);
        assert_eq!(retry_after_ms(40), 6 * 3_600_000);
        let m = |validity: Option<(u64, u64)>, failures: u32, last: Option<u64>| Managed {
            state: CertState::Pending,
            validity: validity.map(|(a, b)| (Millis(a), Millis(b))),
            failures,
            last_attempt: last.map(Millis),
        };
        // (managed, now, decision)
        for (case, now, want) in [
            (m(None, 0, None), 5, Due::Issue),
            (m(None, 1, Some(100)), 105, Due::Wait(Millis(10_100))),
            (m(None, 1, Some(100)), 10_100, Due::Issue),
            (m(Some((0, 90)), 0, Some(0)), 59, Due::Wait(Millis(60))),
            (m(Some((0, 90)), 0, Some(0)), 60, Due::Issue),
            // A renewal that failed waits out its back-off, the old certificate still serving.
            (m(Some((0, 90_000)), 2, Some(60_000)), 61_000, Due::Wait(Millis(80_000))),
        ] {
            assert_eq!(due(&case, Millis(now)), want, "{case:?} at {now}");
        }
    }

    #[test]
    fn wanted_certificates_per_host_or_per_data_center() {
        let eps = [("abc".to_owned(), "eu".to_owned()), ("def".to_owned(), "us".to_owned())];
        let dcs = ["eu".to_owned(), "us".to_owned()];
        let hosts = |w: Vec<Wanted>| w.into_iter().map(|w| w.host).collect::<Vec<_>>();
        let none = |_: &str| false;
        // (policy, api host, covered by files, wanted)
        assert_eq!(
            hosts(wanted(&eps, &dcs, Some("api.ex.com"), "ex.com", HostPolicy::PerHost, none)),
            ["abc.eu.ex.com", "api.ex.com", "def.us.ex.com"]
        );
        assert_eq!(
            hosts(wanted(&eps, &dcs, None, "ex.com", HostPolicy::WildcardPerDataCenter, none)),
            ["*.eu.ex.com", "*.us.ex.com"]
        );
        // A wildcard from a file covers the endpoints of its data center: nothing to issue there.
        let file = |h: &str| name_covers("*.eu.ex.com", h) || h == "*.eu.ex.com";
        assert_eq!(hosts(wanted(&eps, &dcs, None, "ex.com", HostPolicy::PerHost, file)), ["def.us.ex.com"]);
        assert_eq!(hosts(wanted(&eps, &dcs, None, "ex.com", HostPolicy::WildcardPerDataCenter, file)), ["*.us.ex.com"]);
        assert!(wanted(&[], &dcs, Some("API.ex.com"), "ex.com", HostPolicy::PerHost, none)[0].host == "api.ex.com");
        assert!(Wanted::one("*.eu.ex.com".into()).is_wildcard());
    }
}
