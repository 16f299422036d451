use crate::{Message, Verdict};

/// The one thing a plugin author writes: what to do with a message.
///
/// Handlers are plain functions of the message: the host keeps one plugin
/// instance per worker and may recreate it at any time (after a trap, or when
/// a new plugin version is swapped in), so state kept in statics is a cache,
/// never a source of truth.
pub trait Handler {
    /// Decide the fate of one message.
    fn handle(message: &Message) -> Verdict;

    /// Decide the fate of several messages, one verdict each, in order.
    ///
    /// The default calls [`Handler::handle`] on each message, which is what
    /// nearly every handler wants; override it only to share work across a
    /// batch (one lookup for many keys, say).
    fn handle_batch(messages: &[Message]) -> Vec<Verdict> {
        messages.iter().map(Self::handle).collect()
    }
}

/// Export a [`Handler`] as the plugin's `handle` and `handle-batch`.
///
/// Use it exactly once per plugin crate, at the top level.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = {
            struct SluiceExports;

            impl $crate::bindings::Guest for SluiceExports {
                fn handle(message: $crate::Message) -> $crate::Verdict {
                    <$handler as $crate::Handler>::handle(&message)
                }

                fn handle_batch(messages: ::std::vec::Vec<$crate::Message>) -> ::std::vec::Vec<$crate::Verdict> {
                    <$handler as $crate::Handler>::handle_batch(&messages)
                }
            }

    $crate::bindings::export!(SluiceExports with_types_in $crate::bindings);
        };
    };
}
