//! Cached models (issue 18), the pure parts: what an endpoint's `models` entries mean and how
//! they are validated, which files of a repository a model selects (include and exclude globs,
//! as `huggingface_hub`'s allow and ignore patterns), where everything lives in the cache (the
//! Hugging Face hub cache layout), what eviction removes under a size limit, and what a pending
//! worker's reason says while its models are staged.
use serde::{Deserialize, Serialize};

use crate::{FieldError, Millis};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A Hugging Face repository (`hf://org/name[@revision]`), at a branch, tag or commit.
    Hub { repo: String, revision: String },
    /// One file at an `https://` (or `http://`) URL.
    Url { url: String },
}

/// The revision of a hub source that names none.
pub const DEFAULT_REVISION: &str = "main";

impl ModelSource {
    /// Parses `hf://org/name`, `hf://org/name@revision` or an `http(s)://` URL. The error says
    /// what is wrong without repeating the value.
    pub fn parse(s: &str) -> Result<ModelSource, String> {
        if let Some(rest) = s.strip_prefix("hf://") {
            let (repo, revision) = match rest.split_once('@') {
                Some((r, rev)) => (r, rev),
                None => (rest, DEFAULT_REVISION),
            };
            if !is_repo_id(repo) {
                return Err(
                    "a hub source is hf://org/name[@revision], with names of letters, digits, '-', '_' and '.'".into(),
                );
            }
            if revision.is_empty()
                || revision.len() > 256
                || revision.starts_with('/')
                || revision.contains("..")
                || revision.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\'))
            {
                return Err("the revision after '@' must be a branch, tag or commit".into());
            }
            return Ok(ModelSource::Hub { repo: repo.to_owned(), revision: revision.to_owned() });
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            let ok = s.len() <= 2048
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                && s.split("://")
                    .nth(1)
                    .is_some_and(|r| r.split('/').next().is_some_and(|h| !h.is_empty() && !h.contains('@')))
                && file_name(s).is_some();
            if !ok {
                return Err("a URL source must be http(s)://host/path/file, without credentials or spaces".into());
            }
            return Ok(ModelSource::Url { url: s.to_owned() });
        }
        Err("must start with hf:// (a Hugging Face repository) or https:// (a file)".into())
    }

    /// The source as written (`hf://org/name@revision`, the URL).
    pub fn display(&self) -> String {
        match self {
            ModelSource::Hub { repo, revision } if revision == DEFAULT_REVISION => format!("hf://{repo}"),
            ModelSource::Hub { repo, revision } => format!("hf://{repo}@{revision}"),
            ModelSource::Url { url } => url.clone(),
        }
    }
}

/// `org/name` (or `name`), each part of `[A-Za-z0-9._-]`, 1-96 characters, not `.`/`..`.
pub fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 96
                && *p != "."
                && *p != ".."
                && !p.starts_with('-')
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// The last path segment of a URL (its file name), if it has one.
pub fn file_name(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?.split("://").nth(1)?;
    let (_, p) = path.split_once('/')?;
    let name = p.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// One entry of an endpoint's `models`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSpec {
    pub source: ModelSource,
    /// Only files matching one of these (none: every file).
    #[serde(default)]
    pub include: Vec<String>,
    /// Never files matching one of these.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A `models` entry as submitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelDraft {
    pub source: String,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// How many models an endpoint may list, and globs per model.
pub const MAX_MODELS: usize = 16;
pub const MAX_GLOBS: usize = 64;

/// Validates an endpoint's `models` (errors name `models[i].source` and the like).
pub fn validate_models(drafts: &[ModelDraft]) -> Result<Vec<ModelSpec>, FieldError> {
    if drafts.len() > MAX_MODELS {
        return Err(FieldError::new("models", format!("at most {MAX_MODELS} models")));
    }
    let mut out: Vec<ModelSpec> = Vec::new();
    for (i, d) in drafts.iter().enumerate() {
        let source =
            ModelSource::parse(d.source.trim()).map_err(|why| FieldError::new(format!("models[{i}].source"), why))?;
        let globs = |name: &str, v: &Option<Vec<String>>| -> Result<Vec<String>, FieldError> {
            let v = v.clone().unwrap_or_default();
            if v.len() > MAX_GLOBS {
                return Err(FieldError::new(format!("models[{i}].{name}"), format!("at most {MAX_GLOBS} patterns")));
            }
            if v.iter().any(|g| g.is_empty() || g.len() > 256 || g.chars().any(char::is_control)) {
                return Err(FieldError::new(
                    format!("models[{i}].{name}"),
                    "patterns must be 1-256 printable characters",
                ));
            }
            Ok(v)
        };
        let (include, exclude) = (globs("include", &d.include)?, globs("exclude", &d.exclude)?);
        if matches!(source, ModelSource::Url { .. }) && (!include.is_empty() || !exclude.is_empty()) {
            return Err(FieldError::new(format!("models[{i}].include"), "a URL source is one file: no patterns"));
        }
        let m = ModelSpec { source, include, exclude };
        if out.contains(&m) {
            return Err(FieldError::new(format!("models[{i}].source"), "is listed twice"));
        }
        out.push(m);
    }
    Ok(out)
}

/// Whether `path` matches a glob as `fnmatch` does (what `huggingface_hub`'s allow and ignore
/// patterns use): `*` matches anything (also `/`), `?` one character, `[abc]` / `[!abc]` a set.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), path.chars().collect());
    // Iterative matching with one backtrack point for the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while j < s.len() {
        if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
            continue;
        }
        if i < p.len() && p[i] == '[' {
            if let Some((matched, next)) = class(&p, i, s[j]) {
                if matched {
                    i = next;
                    j += 1;
                    continue;
                }
            } else if s[j] == '[' {
                i += 1;
                j += 1;
                continue;
            }
        } else if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
            continue;
        }
        match star {
            Some(st) => {
                i = st + 1;
                mark += 1;
                j = mark;
            }
            None => return false,
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// A `[...]` class at `p[i]`: whether `c` is in it, and the index after it (`None`: not a class).
fn class(p: &[char], i: usize, c: char) -> Option<(bool, usize)> {
    let mut k = i + 1;
    let negate = p.get(k).is_some_and(|x| *x == '!' || *x == '^');
    if negate {
        k += 1;
    }
    let start = k;
    let mut hit = false;
    while k < p.len() && (p[k] != ']' || k == start) {
        if k + 2 < p.len() && p[k + 1] == '-' && p[k + 2] != ']' {
            hit |= p[k] <= c && c <= p[k + 2];
            k += 3;
        } else {
            hit |= p[k] == c;
            k += 1;
        }
    }
    (k < p.len()).then_some((hit != negate, k + 1))
}

/// Whether a model selects the file at `path` of its repository.
pub fn selects(m: &ModelSpec, path: &str) -> bool {
    (m.include.is_empty() || m.include.iter().any(|g| glob_match(g, path)))
        && !m.exclude.iter().any(|g| glob_match(g, path))
}

/// The cache folder of a hub repository: `models--org--name` (the hub cache's layout).
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// A cached model (one resolved revision of one source) as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: String,
    pub bytes: u64,
    pub last_used: Millis,
    /// Listed by an endpoint or used by a running worker: never evicted.
    pub pinned: bool,
}

/// Whether the cache entry `key` may be `source` at a revision not resolved yet (after a restart,
/// before the model is looked up again): any revision of its repository, or its URL, with or
/// without patterns. Such entries are pinned until the model resolves.
pub fn may_hold(key: &str, source: &ModelSource) -> bool {
    match source {
        ModelSource::Hub { repo, .. } => {
            key.strip_prefix("hf://").and_then(|k| k.strip_prefix(repo.as_str())).is_some_and(|r| r.starts_with('@'))
        }
        ModelSource::Url { url } => {
            key.strip_prefix(url.as_str()).is_some_and(|r| r.is_empty() || r.starts_with(" include="))
        }
    }
}

/// What to remove so the cache fits in `max_bytes`: least recently used first, never a pinned
/// entry. (It may stay above the limit when pinned entries alone exceed it.)
pub fn evict(entries: &[CacheEntry], max_bytes: u64) -> Vec<String> {
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut order: Vec<&CacheEntry> = entries.iter().filter(|e| !e.pinned).collect();
    order.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.key.cmp(&b.key)));
    let mut out = Vec::new();
    for e in order {
        if total <= max_bytes {
            break;
        }
        total -= e.bytes;
        out.push(e.key.clone());
    }
    out
}

/// A pending worker's reason while its models are staged: "staging model 3.1/14.9 GB".
pub fn staging_reason(done: u64, total: u64) -> String {
    let gb = |b: u64| b as f64 / 1e9;
    if total == 0 {
        return "staging model (listing its files)".into();
    }
    format!("staging model {:.1}/{:.1} GB", gb(done), gb(total))
}

/// How a large file is fetched: in ranges of this size, several at once.
pub const RANGE_BYTES: u64 = 32 * 1024 * 1024;

/// The byte ranges of a file of `size` bytes: `[start, end)` each.
pub fn ranges(size: u64, chunk: u64) -> Vec<(u64, u64)> {
    let chunk = chunk.max(1);
    (0..size.div_ceil(chunk)).map(|k| (k * chunk, ((k + 1) * chunk).min(size))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_say_what_is_wrong() {
        assert_eq!(
            ModelSource::parse("hf://Qwen/Qwen2.5-7B-Instruct").unwrap(),
            ModelSource::Hub { repo: "Qwen/Qwen2.5-7B-Instruct".into(), revision: "main".into() }
        );
        assert_eq!(
            ModelSource::parse("hf://gpt2@a1b2c3d").unwrap(),
            ModelSource::Hub { repo: "gpt2".into(), revision: "a1b2c3d".into() }
        );
        assert_eq!(ModelSource::parse("hf://org/name@refs/pr/1").unwrap().display(), "hf://org/name@refs/pr/1");
        assert_eq!(ModelSource::parse("hf://org/name@main").unwrap().display(), "hf://org/name");
        let u = "https://example.com/weights/model.safetensors?download=1";
        assert_eq!(ModelSource::parse(u).unwrap(), ModelSource::Url { url: u.into() });
        for bad in [
            "Qwen/Qwen2.5",
            "hf://",
            "hf://a/b/c",
            "hf://a b/c",
            "hf://org/name@",
            "hf://org/name@../x",
            "hf://../x",
            "https://",
            "https://host/",
            "https://user:pw@host/f.bin",
            "ftp://h/f",
            "https://h/a b",
        ] {
            assert!(ModelSource::parse(bad).is_err(), "{bad}");
        }
        // The message never repeats the value (it may be a pasted secret).
        assert!(!ModelSource::parse("https://user:hunter2@h/f").unwrap_err().contains("hunter2"));
    }

    #[test]
    fn validation_names_the_entry() {
        let d = |s: &str| ModelDraft { source: s.into(), ..Default::default() };
        assert_eq!(validate_models(&[d("hf://a/b"), d("nope")]).unwrap_err().field, "models[1].source");
        assert_eq!(validate_models(&[d("hf://a/b"), d("hf://a/b")]).unwrap_err().field, "models[1].source");
        let url_globs = ModelDraft { include: Some(vec!["*.bin".into()]), ..d("https://h/f.bin") };
        assert_eq!(validate_models(&[url_globs]).unwrap_err().field, "models[0].include");
        let m = validate_models(&[ModelDraft {
            include: Some(vec!["*.safetensors".into(), "*.json".into()]),
            exclude: Some(vec!["original/*".into()]),
            ..d("hf://a/b@v1")
        }])
        .unwrap();
        assert!(selects(&m[0], "model-00001-of-00002.safetensors"));
        assert!(selects(&m[0], "config.json"));
        assert!(!selects(&m[0], "original/consolidated.safetensors"), "excluded");
        assert!(!selects(&m[0], "pytorch_model.bin"), "not included");
        assert_eq!(validate_models(&vec![d("hf://a/b"); 17]).unwrap_err().field, "models");
    }

    #[test]
    fn globs_match_as_fnmatch() {
        for (p, s, ok) in [
            ("*.json", "config.json", true),
            ("*.json", "sub/config.json", true),
            ("*.json", "config.jsonl", false),
            ("model-?????-of-*.safetensors", "model-00001-of-00002.safetensors", true),
            ("[!o]*", "model.bin", true),
            ("[!o]*", "original/x", false),
            ("[a-c]*", "b.txt", true),
            ("[a-c]*", "d.txt", false),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("[", "[", true),
        ] {
            assert_eq!(glob_match(p, s), ok, "{p} {s}");
        }
    }

    #[test]
    fn an_unresolved_model_may_be_any_revision_of_its_repository() {
        let hub = ModelSource::parse("hf://org/name@v2").unwrap();
        let url = ModelSource::parse("https://h.test/w.bin").unwrap();
        let cases: &[(&str, &ModelSource, bool)] = &[
            ("hf://org/name@0123abcd", &hub, true),
            ("hf://org/name@0123abcd include=[\"*.json\"] exclude=[]", &hub, true),
            ("hf://org/name2@0123abcd", &hub, false),
            ("hf://org/nam@0123abcd", &hub, false),
            ("hf://other/name@0123abcd", &hub, false),
            ("https://h.test/w.bin", &url, true),
            ("https://h.test/w.bin include=[] exclude=[\"x\"]", &url, true),
            ("https://h.test/w.bin2", &url, false),
            ("hf://org/name@0123abcd", &url, false),
        ];
        for (key, source, want) in cases {
            assert_eq!(may_hold(key, source), *want, "{key} for {source:?}");
        }
    }

    #[test]
    fn eviction_is_lru_and_spares_pinned_entries() {
        let e = |k: &str, gb: u64, used: u64, pinned: bool| CacheEntry {
            key: k.into(),
            bytes: gb << 30,
            last_used: Millis(used),
            pinned,
        };
        let cache = [e("old", 10, 1, false), e("listed", 30, 0, true), e("mid", 10, 5, false), e("new", 10, 9, false)];
        assert_eq!(evict(&cache, 60 << 30), Vec::<String>::new());
        assert_eq!(evict(&cache, 50 << 30), ["old"]);
        assert_eq!(evict(&cache, 35 << 30), ["old", "mid", "new"]);
        assert_eq!(evict(&cache, 0), ["old", "mid", "new"], "the pinned one stays, over the limit");
    }

    #[test]
    fn layout_ranges_and_reasons() {
        assert_eq!(repo_folder("Qwen/Qwen2.5-7B"), "models--Qwen--Qwen2.5-7B");
        assert_eq!(repo_folder("gpt2"), "models--gpt2");
        assert_eq!(ranges(10, 4), [(0, 4), (4, 8), (8, 10)]);
        assert_eq!(ranges(0, 4), []);
        assert_eq!(ranges(8, 4), [(0, 4), (4, 8)]);
        assert_eq!(staging_reason(3_100_000_000, 14_900_000_000), "staging model 3.1/14.9 GB");
        assert_eq!(file_name("https://h/a/b/model.gguf?x=1"), Some("model.gguf"));
        assert_eq!(file_name("https://h"), None);
    }
}
