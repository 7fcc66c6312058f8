//! Token metrics of streamed OpenAI answers (`text/event-stream` from `/chat/completions` or
//! `/completions`): the time from the request's arrival to the first token, the time between
//! tokens, and the tokens (the final `usage` chunk's `completion_tokens` when the client asked
//! for it, else the chunks). The body passes through untouched; each frame is scanned for
//! `data: {` and `"completion_tokens":`, which costs a pass over bytes already in cache.
use std::{
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::{body::BoxError, table::EndpointStats};

/// Whether an answer is a token stream worth metering.
pub fn is_token_stream(path: &str, headers: &HeaderMap) -> bool {
    let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
    (path.ends_with("/chat/completions") || path.ends_with("/completions"))
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"))
}

/// What a frame of SSE holds: the events (`data: {`), and the last `completion_tokens` seen.
pub fn scan(frame: &[u8]) -> (u64, Option<u64>) {
    let events = frame.windows(7).filter(|w| w == b"data: {").count() as u64;
    const KEY: &[u8] = b"\"completion_tokens\":";
    let usage = frame.windows(KEY.len()).rposition(|w| w == KEY).and_then(|at| {
        let digits: Vec<u8> = frame[at + KEY.len()..]
            .iter()
            .skip_while(|b| **b == b' ')
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    });
    (events, usage)
}

/// A response body that meters the tokens passing through it.
pub struct Metered<B> {
    inner: B,
    stats: Arc<EndpointStats>,
    arrived: Instant,
    last: Option<Instant>,
    events: u64,
    usage: Option<u64>,
    done: bool,
}

impl<B> Metered<B> {
    pub fn new(inner: B, stats: Arc<EndpointStats>, arrived: Instant) -> Self {
        Metered { inner, stats, arrived, last: None, events: 0, usage: None, done: false }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            let m = &self.stats.metrics;
            // The usage chunk and the finishing chunk are events, not tokens.
            let tokens = self.usage.unwrap_or_else(|| self.events.saturating_sub(1));
            m.output_tokens.fetch_add(tokens, Relaxed);
            m.streams.fetch_add(1, Relaxed);
        }
    }
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Metered<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    let (events, usage) = scan(d);
                    if events > 0 {
                        let now = Instant::now();
                        let m = &this.stats.metrics;
                        match this.last {
                            None => m.ttft.observe(now - this.arrived),
                            Some(prev) => m.itl.observe(now - prev),
                        }
                        this.last = Some(now);
                        this.events += events;
                    }
                    if usage.is_some() {
                        this.usage = usage;
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    /// A stream the client left counts with the tokens it got.
    fn drop(&mut self) {
        if self.last.is_some() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_scanned_for_events_and_usage() {
        assert_eq!(scan(b"data: {\"choices\":[]}\n\n"), (1, None));
        assert_eq!(scan(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n"), (2, None));
        assert_eq!(
            scan(b"data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\": 17}}\n\ndata: [DONE]\n\n"),
            (1, Some(17))
        );
        assert_eq!(scan(b"data: [DONE]\n\n"), (0, None));
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "text/event-stream; charset=utf-8".parse().unwrap());
        assert!(is_token_stream("/v1/chat/completions", &h));
        assert!(is_token_stream("/v1/completions?x=1", &h));
        assert!(!is_token_stream("/v1/embeddings", &h));
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(!is_token_stream("/v1/chat/completions", &h));
    }
}
