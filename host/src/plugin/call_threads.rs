//! The threads plugin calls run on: a tokio runtime of their own.
//!
//! Calls are async (wasmtime's `call_async`): a call waiting on a timer, an
//! HTTP response or a key-value reply is a parked future, not a blocked
//! thread, so hundreds of waiting calls cost their instances' memory and
//! nothing more. A call that computes yields every epoch tick
//! ([`EPOCH_TICK`](super::runtime::EPOCH_TICK)), so calls share these
//! threads fairly.
//!
//! They are kept off the stage's own runtime, whose threads fetch,
//! produce, commit and answer `/healthz`: Wasm that computes would hold
//! one of those for a tick at a time, where here it competes with the
//! Kafka client only for cores, as blocking threads did before.

use std::io;

use tokio::runtime::{Builder, Handle, Runtime};

/// Threads for the blocking work of plugin calls, at most.
const MAX_BLOCKING_THREADS: usize = 32;

/// Owns the call runtime; shared by every [`Plugin`](super::Plugin) of a
/// [`PluginRuntime`](super::PluginRuntime), so it lives as long as any
/// plugin can be called.
pub(crate) struct CallThreads {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl CallThreads {
    /// One worker thread per core: more would only take turns at the same
    /// cores, fewer would leave a core idle while calls compute.
    pub(crate) fn start() -> io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            // What still needs a thread: resolving the host name of a
            // plugin's request (tokio resolves names on blocking threads).
            // Past this many at once, lookups wait their turn instead of
            // each starting a thread.
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("sluice-plugin")
            .enable_all()
            .build()?;
        Ok(CallThreads {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where plugin calls are spawned.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run a call from code that is not async (the CLI, the reload trial,
    /// a stage's start-up check) and wait for it. The call is polled on the
    /// calling thread; its timers and sockets are driven by these threads.
    ///
    /// Inside a tokio runtime (a library user building a stage in async
    /// code), where [`Handle::block_on`] would panic, it waits on a thread
    /// of its own instead.
    pub(crate) fn block_on<F>(&self, call: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if Handle::try_current().is_err() {
            return self.handle.block_on(call);
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.handle.block_on(call))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for CallThreads {
    /// The last plugin may be dropped anywhere, even on one of these
    /// threads, where a blocking shutdown would panic; calls still running
    /// belong to nobody by then.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
