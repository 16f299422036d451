//! The plugin's request body, as hyper sends it.
//!
//! Whatever hyper does not read is still read to its end and dropped,
//! bounded: a request refused before it is sent, or one whose server
//! answered and closed before the body was done (a server may answer a GET
//! before the plugin has finished its empty body). The plugin writes its
//! body while it waits for the answer, and must get the answer (or the
//! refusal), not a broken body stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, WasiBody};

/// How much of a body nobody sends is read, at most.
const UNSENT_BODY_LIMIT: usize = 16 * 1024 * 1024;
const UNSENT_BODY_TIME: Duration = Duration::from_secs(10);

pub(super) struct RequestBody {
    /// `None` once read to its end (or failed).
    inner: Option<WasiBody>,
    /// Bytes sent, by origin (`sluice_plugin_http_request_bytes_total`).
    sent: Option<metrics::Counter>,
}

impl RequestBody {
    pub(super) fn new(body: WasiBody) -> Self {
        RequestBody {
            inner: Some(body),
            sent: None,
        }
    }

    /// Count the bytes hyper sends from here on.
    pub(super) fn counted_in(&mut self, sent: metrics::Counter) {
        self.sent = Some(sent);
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(context);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(sent)) = (frame.data_ref(), &this.sent) {
                    sent.increment(data.len() as u64);
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.inner = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drained = async {
                let mut read = 0;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, |data| data.len());
                    if read > UNSENT_BODY_LIMIT {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(UNSENT_BODY_TIME, drained).await;
        });
    }
}
