//! Guest stdout and stderr, forwarded to `tracing` one line at a time.
//!
//! Plugins print: Rust panics write their message to stderr, Python prints
//! tracebacks, JavaScript `console.log`s. Each line becomes a log record
//! tagged with the plugin's name. Stderr lines written during the current
//! call are also kept, so a trap's reason can quote the panic message or
//! exception that caused it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept whole; a guest that never writes a newline is logged in
/// pieces of this size rather than buffered without bound.
const MAX_LINE_BYTES: usize = 8 * 1024;
/// How much of a call's stderr is kept for a failure reason.
const MAX_CAPTURED_LINES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestStream {
    Stdout,
    Stderr,
}

/// One guest output stream. Clones share the same buffer, which matters
/// because WASI hands out a new stream handle each time the guest asks.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    stream: GuestStream,
    plugin: Arc<str>,
    state: Arc<Mutex<LineBuffer>>,
}

#[derive(Default)]
struct LineBuffer {
    partial: Vec<u8>,
    call_lines: VecDeque<String>,
}

impl GuestOutput {
    pub(crate) fn new(stream: GuestStream, plugin: Arc<str>) -> Self {
        GuestOutput {
            stream,
            plugin,
            state: Arc::default(),
        }
    }

    /// Forget what earlier calls wrote; called as each call starts.
    pub(crate) fn begin_call(&self) {
        self.lock().call_lines.clear();
    }

    /// Log any unterminated line and return what this call wrote, oldest
    /// first (at most the last few lines).
    pub(crate) fn end_call(&self) -> Vec<String> {
        let mut state = self.lock();
        if !state.partial.is_empty() {
            let line = std::mem::take(&mut state.partial);
            self.emit(&mut state, &line);
        }
        state.call_lines.drain(..).collect()
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut state = self.lock();
        state.partial.extend_from_slice(bytes);
        while let Some(newline) = state.partial.iter().position(|&byte| byte == b'\n') {
            let rest = state.partial.split_off(newline + 1);
            let line = std::mem::replace(&mut state.partial, rest);
            self.emit(&mut state, &line[..newline]);
        }
        if state.partial.len() >= MAX_LINE_BYTES {
            let line = std::mem::take(&mut state.partial);
            self.emit(&mut state, &line);
        }
    }

    fn emit(&self, state: &mut LineBuffer, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        match self.stream {
            GuestStream::Stdout => {
                tracing::info!(target: "sluice::plugin::guest", plugin = %self.plugin, stream = "stdout", "{line}")
            }
            GuestStream::Stderr => {
                tracing::warn!(target: "sluice::plugin::guest", plugin = %self.plugin, stream = "stderr", "{line}")
            }
        }
        if state.call_lines.len() == MAX_CAPTURED_LINES {
            state.call_lines.pop_front();
        }
        state.call_lines.push_back(line.to_owned());
    }

    fn lock(&self) -> MutexGuard<'_, LineBuffer> {
        // A poisoned buffer only means a panic while logging; the bytes are
        // still fine to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Lines are logged as they complete; a partial line waits for its
        // newline (or the end of the call) so it is not split in two.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
