//! The gateway's side of `session_affinity` and `prefix_aware` (the choices themselves are
//! `sluice_core::affinity`): a bounded look at the start of the request body, which is then
//! forwarded whole, and what the worker choice needs from it.
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_core::{
    LoadBalancing,
    affinity::{self, Candidate, LOOK_BYTES, REMEMBERED_BLOCKS},
};

use crate::{
    body::BodySlot,
    error::Error,
    table::{EndpointEntry, WorkerEntry},
};

/// The session header, when the endpoint names none.
pub const SESSION_HEADER: &str = "x-session-id";

/// What the worker choice goes by.
#[derive(Debug, Default)]
pub enum Affinity {
    /// The endpoint's plain policy.
    #[default]
    None,
    /// A session key's hash (its place on the ring).
    Session(u64),
    /// The prompt's leading block hashes.
    Prefix(Vec<u64>),
}

/// How much the look reads: the prompt's blocks plus room for the fields before it.
const LOOK_LIMIT: usize = LOOK_BYTES + 4096;

/// Reads up to `LOOK_LIMIT` bytes of the body (or all of it, if shorter), and returns them with
/// the rest to forward.
pub async fn look(mut body: Incoming) -> Result<(Bytes, Option<Incoming>), Error> {
    let mut head = BytesMut::new();
    while head.len() < LOOK_LIMIT {
        match body.frame().await {
            None => return Ok((head.freeze(), None)),
            Some(Err(e)) => return Err(Error::ClientBody(e.to_string())),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    head.extend_from_slice(&d);
                }
            }
        }
    }
    Ok((head.freeze(), Some(body)))
}

/// The session header of an endpoint.
fn session_header(ep: &EndpointEntry) -> &str {
    ep.route.session_header.as_deref().unwrap_or(SESSION_HEADER)
}

/// The affinity of a request to an endpoint with `policy`, from its headers (`header`: the
/// session's) and the look.
pub fn of(policy: LoadBalancing, header: &str, headers: &HeaderMap, look: &[u8]) -> Affinity {
    match policy {
        LoadBalancing::SessionAffinity => {
            let key = headers.get(header).map(|v| v.as_bytes()).or_else(|| affinity::user_field(look));
            key.filter(|k| !k.is_empty()).map_or(Affinity::None, |k| Affinity::Session(affinity::hash(k)))
        }
        LoadBalancing::PrefixAware => {
            let blocks = affinity::prompt_blocks(look);
            if blocks.is_empty() { Affinity::None } else { Affinity::Prefix(blocks) }
        }
        LoadBalancing::RoundRobin | LoadBalancing::LeastOutstandingRequests | LoadBalancing::LeastEngineLoad => {
            Affinity::None
        }
    }
}

/// Reads the look when the endpoint's policy wants one; returns the body slot to forward and
/// the affinity.
pub async fn prepare(
    ep: &EndpointEntry,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(Option<BodySlot>, Affinity), Error> {
    let policy = ep.route.load_balancing;
    if !policy.looks_at_body() {
        return Ok(((!http_body::Body::is_end_stream(&body)).then(|| BodySlot::new(body)), Affinity::None));
    }
    let header = session_header(ep);
    // A session header decides without reading anything.
    if policy == LoadBalancing::SessionAffinity && headers.contains_key(header) {
        let aff = of(policy, header, headers, &[]);
        return Ok(((!http_body::Body::is_end_stream(&body)).then(|| BodySlot::new(body)), aff));
    }
    if http_body::Body::is_end_stream(&body) {
        return Ok((None, of(policy, header, headers, &[])));
    }
    let (head, rest) = look(body).await?;
    let aff = of(policy, header, headers, &head);
    Ok((Some(BodySlot::with_head(head, rest)), aff))
}

/// The same for a body read whole already (the OpenAI front door).
pub fn prepare_whole(ep: &EndpointEntry, headers: &HeaderMap, body: Bytes) -> (Option<BodySlot>, Affinity) {
    let policy = ep.route.load_balancing;
    let aff = if policy.looks_at_body() {
        of(policy, session_header(ep), headers, &body[..body.len().min(LOOK_LIMIT)])
    } else {
        Affinity::None
    };
    ((!body.is_empty()).then(|| BodySlot::with_head(body, None)), aff)
}

/// The worker an affine request goes to (index into `ep.workers`), skipping `exclude`; `None`
/// when none has room. The caller reserves the slot.
pub fn choose(ep: &EndpointEntry, aff: &Affinity, exclude: Option<usize>, cap: u64) -> Option<usize> {
    let load = |i: usize| if Some(i) == exclude { u64::MAX / 4 } else { ep.workers[i].outstanding.load(Relaxed) };
    match aff {
        Affinity::None => None,
        Affinity::Session(key) => affinity::pick_on_ring(&ep.ring, *key, load, ep.workers.len(), cap),
        Affinity::Prefix(blocks) => {
            let cands: Vec<Candidate> = (0..ep.workers.len())
                .map(|i| {
                    let seen = ep.workers[i].prefixes.lock().unwrap_or_else(|p| p.into_inner());
                    Candidate { matched: affinity::matched(blocks, |h| seen.contains(h)), outstanding: load(i) }
                })
                .collect();
            // Ties rotate by the prompt's own last block: conversations spread by content.
            let start = blocks.last().map_or(0, |h| *h as usize);
            affinity::choose_prefix(&cands, blocks.len(), cap, start)
        }
    }
}

/// After a worker took the request: it will hold the prompt's blocks.
pub fn taken(aff: &Affinity, w: &WorkerEntry) {
    if let Affinity::Prefix(blocks) = aff {
        w.prefixes.lock().unwrap_or_else(|p| p.into_inner()).remember(blocks, REMEMBERED_BLOCKS);
    }
}
