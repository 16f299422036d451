//! A response body the plugin reads within the grant's bounds: no more
//! than `max_response_bytes`, and not past the request's deadline.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::Error;

/// Wraps the connection's body. Holds the instance's request permit until
/// the body is read to its end or dropped, so a plugin cannot open more
/// requests than granted by leaving bodies unread.
pub(super) struct CappedBody<B> {
    inner: B,
    remaining: u64,
    cap: u64,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    /// Bytes received, by origin (`sluice_plugin_http_response_bytes_total`).
    received: metrics::Counter,
}

impl<B> CappedBody<B> {
    pub(super) fn new(
        inner: B,
        cap: u64,
        deadline: Instant,
        permit: OwnedSemaphorePermit,
        received: metrics::Counter,
    ) -> Self {
        CappedBody {
            inner,
            remaining: cap,
            cap,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            _permit: permit,
            received,
        }
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    Error: From<B::Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(context).is_ready() {
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(context) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(Error::from(error)))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let length = data.len() as u64;
            if length > this.remaining {
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.cap)))));
            }
            this.remaining -= length;
            this.received.increment(length);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http_body_util::{BodyExt, Full, StreamBody};
    use tokio::sync::Semaphore;

    use super::*;

    fn permit() -> OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a permit")
    }

    fn full(bytes: &'static [u8]) -> http_body_util::combinators::BoxBody<Bytes, Error> {
        Full::new(Bytes::from_static(bytes))
            .map_err(|never| match never {})
            .boxed()
    }

    #[tokio::test]
    async fn a_body_within_the_cap_arrives_whole() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let body = CappedBody::new(full(b"0123456789"), 10, deadline, permit(), metrics::Counter::noop());
        let bytes = body.collect().await.expect("within the cap").to_bytes();
        assert_eq!(&bytes[..], b"0123456789");
    }

    #[tokio::test]
    async fn a_body_past_the_cap_fails_with_the_cap() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let body = CappedBody::new(full(b"0123456789!"), 10, deadline, permit(), metrics::Counter::noop());
        let error = body.collect().await.expect_err("past the cap");
        assert!(matches!(error, Error::HttpResponseBodySize(Some(10))), "{error:?}");
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_at_the_deadline_and_gives_its_permit_back() {
        let permits = Arc::new(Semaphore::new(1));
        let held = permits.clone().try_acquire_owned().expect("a permit");
        let stalled = StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Error>>());
        let deadline = Instant::now() + Duration::from_millis(200);
        let body = CappedBody::new(stalled, 10, deadline, held, metrics::Counter::noop());
        let error = body.collect().await.expect_err("stalled");
        assert!(matches!(error, Error::HttpResponseTimeout), "{error:?}");
        assert_eq!(permits.available_permits(), 1);
    }
}
