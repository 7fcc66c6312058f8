//! Body plumbing: the boxed body type, a request body that can be taken back for a retry if it
//! was never sent, and a response body that enforces the execution deadline and releases the
//! in-flight counters when the response ends.
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: Bytes) -> BoxBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> BoxBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A request body shared with the proxy: until the client connection polls it, the proxy can
/// take it back and send it to another worker (a connection error before any byte was sent).
/// It may begin with bytes the gateway already read (the bounded look of the affinity choices).
pub struct RetryableBody {
    shared: Arc<Mutex<Option<Src>>>,
    active: Option<Src>,
}

/// The bytes already read, then the rest from the client.
struct Src {
    head: Option<Bytes>,
    rest: Option<Incoming>,
}

/// The client's request body broke while it was being forwarded (a malformed chunk, fewer
/// bytes than its `Content-Length`, the connection gone): the client's fault, never the
/// worker's. The proxy finds it in the source chain of a failed forward.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read from the client: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// The proxy's handle on a [`RetryableBody`].
#[derive(Clone)]
pub struct BodySlot(Arc<Mutex<Option<Src>>>);

impl BodySlot {
    pub fn new(body: Incoming) -> Self {
        BodySlot(Arc::new(Mutex::new(Some(Src { head: None, rest: Some(body) }))))
    }
    /// A body of which `head` was read already; `rest` is what the client has still to send
    /// (none: `head` is all of it).
    pub fn with_head(head: Bytes, rest: Option<Incoming>) -> Self {
        BodySlot(Arc::new(Mutex::new(Some(Src { head: (!head.is_empty()).then_some(head), rest }))))
    }
    pub fn body(&self) -> RetryableBody {
        RetryableBody { shared: self.0.clone(), active: None }
    }
    /// True if the body was never polled (so the request can be sent again).
    pub fn untouched(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }
}

impl Src {
    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }
    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let mut hint = self.rest.as_ref().map(Body::size_hint).unwrap_or_else(|| SizeHint::with_exact(0));
        // Upper first: a lower bound above the upper one panics.
        if let Some(u) = hint.upper() {
            hint.set_upper(u + head);
        }
        hint.set_lower(hint.lower() + head);
        hint
    }
}

impl Body for RetryableBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.active.is_none() {
            let taken = self.shared.lock().unwrap().take();
            match taken {
                Some(b) => self.active = Some(b),
                None => return Poll::Ready(None),
            }
        }
        let src = self.active.as_mut().expect("set above");
        if let Some(head) = src.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        match src.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx).map_err(|e| Box::new(ClientBodyError(e)) as BoxError),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.active {
            Some(b) => b.is_end_stream(),
            None => self.shared.lock().unwrap().as_ref().is_none_or(Src::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.active {
            Some(b) => b.size_hint(),
            None => self.shared.lock().unwrap().as_ref().map(Src::size_hint).unwrap_or_default(),
        }
    }
}

/// Wraps a worker's response body: ends it with an error at the execution deadline (R3.3 covers
/// the whole streamed response, not only the head) and holds `guard` until the body is done, so
/// the request counts as in flight while it streams. The timer is only armed once the worker
/// makes the body wait, so small answers cost no timer at all.
pub struct DeadlineBody<G> {
    inner: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    timeout_secs: u64,
    guard: Option<G>,
}

impl<G> DeadlineBody<G> {
    pub fn new(inner: Incoming, deadline: Instant, timeout_secs: u64, guard: G) -> Self {
        DeadlineBody { inner, deadline, sleep: None, timeout_secs, guard: Some(guard) }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the response ran longer than the endpoint's execution timeout of {0} s")]
pub struct BodyTimeout(pub u64);

/// What a [`DeadlineBody`] holds until the body ends: told of each data frame's size.
pub trait BodyGuard: Unpin {
    fn sent(&mut self, _bytes: u64) {}
}

impl BodyGuard for () {}

impl<G: BodyGuard> Body for DeadlineBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.guard.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.guard = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.guard = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(g), Some(d)) = (this.guard.as_mut(), f.data_ref()) {
                    g.sent(d.len() as u64);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.guard = None;
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout_secs)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.guard.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;
