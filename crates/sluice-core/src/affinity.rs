//! LLM-aware routing choices, pure: `session_affinity` (a session key sticks to one worker by
//! consistent hashing with bounded loads) and `prefix_aware` (the worker most likely to hold a
//! prompt's prefix in its KV cache, from the prompt blocks each worker was sent, under the same
//! load bound). The gateway looks at a bounded start of the body and never tokenizes: a prompt
//! is cut into fixed byte blocks whose hashes are chained, so two prompts share the first k
//! hashes exactly when they share their first k blocks.
//!
//! The load bound: a worker may take a request only while its requests in flight are below
//! `ceil(LOAD_FACTOR * (in flight + 1) / workers)` (and its concurrency cap), so a hot prefix or
//! session spills to the next worker instead of piling onto one; a worker joining or leaving
//! moves only its own share (the ring places each worker at fixed points).
use std::hash::BuildHasher;

/// How far above the mean load a worker may go before its affinity yields.
pub const LOAD_FACTOR: f64 = 1.25;
/// The router's block of prompt bytes.
pub const BLOCK_BYTES: usize = 512;
/// The most of the prompt the router reads: 64 blocks.
pub const LOOK_BYTES: usize = 64 * BLOCK_BYTES;
/// Points per worker on the ring.
pub const VNODES: usize = 64;
/// Prompt-block hashes remembered per worker (least recently sent out first).
pub const REMEMBERED_BLOCKS: usize = 16_384;

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x51u64)
}

/// A 64-bit hash of `bytes`.
pub fn hash(bytes: &[u8]) -> u64 {
    hasher().hash_one(bytes)
}

/// Where the prompt starts in an OpenAI-style JSON body: at its `"messages"` or `"prompt"`
/// key when one is among the first bytes, else the body's start. (Clients serialize a
/// conversation's earlier messages identically, so equal conversations give equal bytes.)
pub fn prompt_start(body: &[u8]) -> usize {
    const KEYS: [&[u8]; 2] = [b"\"messages\"", b"\"prompt\""];
    let head = &body[..body.len().min(4096)];
    KEYS.iter().filter_map(|k| head.windows(k.len()).position(|w| w == *k)).min().unwrap_or(0)
}

/// The chained hashes of the whole `BLOCK_BYTES` blocks of the prompt in `body`, from its start,
/// within `LOOK_BYTES`.
pub fn prompt_blocks(body: &[u8]) -> Vec<u64> {
    let start = prompt_start(body);
    let look = &body[start..body.len().min(start + LOOK_BYTES)];
    let mut prev = 0u64;
    look.chunks_exact(BLOCK_BYTES)
        .map(|b| {
            prev = hasher().hash_one((prev, b));
            prev
        })
        .collect()
}

/// The most requests in flight a worker may hold to take one more, for `workers` workers with
/// `in_flight` requests between them.
pub fn load_bound(in_flight: u64, workers: usize) -> u64 {
    if workers == 0 {
        return 0;
    }
    ((LOAD_FACTOR * (in_flight + 1) as f64) / workers as f64).ceil() as u64
}

/// The OpenAI `user` field's value in a (maybe cut) JSON body: the bytes between the quotes of
/// the first `"user": "…"` (a key, not the `"role": "user"` value), if they are in `look`.
pub fn user_field(look: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"user\"";
    let mut from = 0;
    while let Some(at) = look[from..].windows(KEY.len()).position(|w| w == KEY) {
        let mut i = from + at + KEY.len();
        from = i;
        while look.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if look.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while look.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if look.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let mut j = start;
        while j < look.len() {
            match look[j] {
                b'\\' => j += 2,
                b'"' => return Some(&look[start..j]),
                _ => j += 1,
            }
        }
        return None;
    }
    None
}

/// The prompt blocks a worker was sent lately: two generations of about `cap / 2` each, so
/// remembering and forgetting cost O(1) and what was used least recently goes first.
#[derive(Debug, Default)]
pub struct Recent {
    current: std::collections::HashSet<u64, foldhash::fast::FixedState>,
    previous: std::collections::HashSet<u64, foldhash::fast::FixedState>,
}

impl Recent {
    pub fn contains(&self, h: u64) -> bool {
        self.current.contains(&h) || self.previous.contains(&h)
    }

    /// Remembers `blocks` (a request sent to this worker), within `cap` in all.
    pub fn remember(&mut self, blocks: &[u64], cap: usize) {
        for &h in blocks {
            if self.current.len() >= (cap / 2).max(1) {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(h);
        }
    }
}

/// A worker as the prefix choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Leading blocks of the prompt it was sent before.
    pub matched: usize,
    pub outstanding: u64,
}

/// The prefix-aware choice for a prompt of `blocks` blocks: among workers under the load bound
/// and `cap`, the one holding the longest prefix (ties to the least loaded). When no worker
/// holds at least half of the prompt (a new conversation sharing at most a system prompt), the
/// least loaded instead, so new conversations spread rather than follow a common preamble.
/// Ties rotate from `start`. `None`: none can take it now.
pub fn choose_prefix(workers: &[Candidate], blocks: usize, cap: u64, start: usize) -> Option<usize> {
    let n = workers.len();
    let total: u64 = workers.iter().map(|c| c.outstanding).sum();
    let bound = load_bound(total, n).min(cap);
    let eligible = (0..n).map(|k| (start + k) % n.max(1)).filter(|&i| workers[i].outstanding < bound);
    let best = eligible.clone().map(|i| workers[i].matched).max()?;
    if best * 2 < blocks.max(1) {
        return eligible.min_by_key(|&i| workers[i].outstanding);
    }
    eligible.filter(|&i| workers[i].matched == best).min_by_key(|&i| workers[i].outstanding)
}

/// How many leading `blocks` a worker that was sent `seen` holds (they are chained, so the
/// first miss ends the prefix).
pub fn matched(blocks: &[u64], seen: impl Fn(u64) -> bool) -> usize {
    // Binary search: a chained prefix is all hits, then all misses.
    let (mut lo, mut hi) = (0usize, blocks.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if seen(blocks[mid]) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// The ring of `ids` (the workers, in table order): `VNODES` points each, sorted.
pub fn ring(ids: &[&str]) -> Vec<(u64, usize)> {
    let mut r: Vec<(u64, usize)> =
        ids.iter().enumerate().flat_map(|(i, id)| (0..VNODES).map(move |v| (hasher().hash_one((id, v)), i))).collect();
    r.sort_unstable();
    r
}

/// Session affinity: from the key's place on the ring, the first worker under the load bound
/// and `cap`. The same key keeps its worker while that worker has room and is there.
pub fn pick_on_ring(
    ring: &[(u64, usize)],
    key: u64,
    outstanding: impl Fn(usize) -> u64,
    workers: usize,
    cap: u64,
) -> Option<usize> {
    if ring.is_empty() || workers == 0 {
        return None;
    }
    let total: u64 = (0..workers).map(&outstanding).sum();
    let bound = load_bound(total, workers).min(cap);
    let start = ring.partition_point(|(h, _)| *h < key);
    (0..ring.len()).map(|k| ring[(start + k) % ring.len()].1).find(|&i| outstanding(i) < bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(blocks: &[u8]) -> Vec<u8> {
        let mut b = br#"{"messages": [{"role": "user", "content": ""#.to_vec();
        for k in blocks {
            b.extend(std::iter::repeat_n(*k, BLOCK_BYTES));
        }
        b.extend(br#""}], "model": "m"}"#);
        b
    }

    #[test]
    fn prompts_sharing_a_start_share_leading_blocks() {
        let a = prompt_blocks(&body(b"abcd"));
        let b = prompt_blocks(&body(b"abxy"));
        assert!(a.len() >= 4);
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        // The model's name or other fields before the prompt do not change its blocks.
        let mut other = br#"{"model": "other", "stream": true, "#.to_vec();
        other.extend(&body(b"abcd")[1..]);
        assert_eq!(prompt_blocks(&other)[..3], a[..3]);
        // Bounded: never more than the look.
        assert_eq!(prompt_blocks(&body(&[b'z'; 200])).len(), LOOK_BYTES / BLOCK_BYTES);
        assert_eq!(matched(&a, |h| b[..2].contains(&h)), 2);
        assert_eq!(matched(&a, |_| false), 0);
        assert_eq!(matched(&a, |_| true), a.len());
        let mut r = Recent::default();
        r.remember(&a, 8);
        assert_eq!(matched(&a, |h| r.contains(h)), a.len().min(8));
        r.remember(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 8);
        assert!(!r.contains(a[0]) && r.contains(9), "the oldest generation went");
    }

    #[test]
    fn the_user_field_is_found_as_a_key_only() {
        for (body, want) in [
            (&br#"{"messages": [{"role": "user", "content": "hi"}], "user": "alice"}"#[..], Some(&b"alice"[..])),
            (br#"{"user" : "b\"ob", "x": 1}"#, Some(br#"b\"ob"#)),
            (br#"{"messages": [{"role": "user"}]}"#, None),
            (br#"{"user": 7}"#, None),
            (br#"{"user": "cut off"#, None),
        ] {
            assert_eq!(user_field(body), want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_prefix_choice_prefers_the_longest_match_within_the_load_bound() {
        let c = |matched, outstanding| Candidate { matched, outstanding };
        for (workers, blocks, cap, start, want) in [
            // The longest prefix wins.
            (vec![c(0, 0), c(3, 0), c(1, 0)], 4, 100, 0, Some(1)),
            // Ties: least loaded, then the rotation.
            (vec![c(2, 1), c(2, 0), c(0, 0)], 4, 100, 0, Some(1)),
            (vec![c(2, 0), c(2, 0), c(0, 0)], 4, 100, 1, Some(1)),
            // Less than half of the prompt held anywhere: the least loaded, rotating.
            (vec![c(1, 0), c(0, 0), c(0, 0)], 10, 100, 2, Some(2)),
            (vec![c(1, 0), c(0, 1), c(0, 0)], 10, 100, 1, Some(2)),
            // Over the bound (ceil(1.25 * 7 / 3) = 3): the holder yields to the next best.
            (vec![c(5, 3), c(3, 2), c(0, 1)], 6, 100, 0, Some(1)),
            // Every worker at its cap: wait.
            (vec![c(5, 2), c(0, 2)], 6, 2, 0, None),
            (vec![], 6, 100, 0, None),
        ] {
            assert_eq!(choose_prefix(&workers, blocks, cap, start), want, "{workers:?} of {blocks} from {start}");
        }
    }

    #[test]
    fn a_hot_prefix_spreads_without_overloading_anyone() {
        // Every request shares the prefix that worker 0 holds; the load never goes past the bound.
        let mut load = [0u64; 4];
        for _ in 0..400 {
            let cands: Vec<Candidate> = load
                .iter()
                .enumerate()
                .map(|(i, &o)| Candidate { matched: if i == 0 { 9 } else { 0 }, outstanding: o })
                .collect();
            let i = choose_prefix(&cands, 9, u64::MAX, 0).unwrap();
            load[i] += 1;
            let mean = load.iter().sum::<u64>() as f64 / 4.0;
            assert!(load.iter().all(|&l| l as f64 <= LOAD_FACTOR * mean + 1.0), "{load:?}");
        }
    }

    #[test]
    fn sessions_stick_and_a_leaving_worker_moves_only_its_share() {
        let ids = ["w1", "w2", "w3", "w4"];
        let r = ring(&ids);
        let idle = |_: usize| 0u64;
        let keys: Vec<u64> = (0..2000u64).map(|k| hash(&k.to_le_bytes())).collect();
        let before: Vec<usize> = keys.iter().map(|k| pick_on_ring(&r, *k, idle, 4, 100).unwrap()).collect();
        // Sticky: the same answer again.
        assert!(keys.iter().zip(&before).all(|(k, b)| pick_on_ring(&r, *k, idle, 4, 100) == Some(*b)));
        // Spread: each worker gets a fair share.
        for w in 0..4 {
            let n = before.iter().filter(|&&b| b == w).count();
            assert!((300..700).contains(&n), "worker {w}: {n}");
        }
        // w3 leaves: only its keys move.
        let left = ring(&["w1", "w2", "w4"]);
        for (k, b) in keys.iter().zip(&before) {
            let now = pick_on_ring(&left, *k, idle, 3, 100).unwrap();
            let now_id = ["w1", "w2", "w4"][now];
            if ids[*b] != "w3" {
                assert_eq!(now_id, ids[*b], "a key of a staying worker moved");
            }
        }
        // A busy owner yields: bound ceil(1.25 * 9 / 4) = 3.
        let busy = |i: usize| if i == before[0] { 8 } else { 0 };
        assert_ne!(pick_on_ring(&r, keys[0], busy, 4, 100), Some(before[0]));
        assert_eq!(pick_on_ring(&r, keys[0], |_| 5, 4, 5), None, "all at their cap");
    }
}
