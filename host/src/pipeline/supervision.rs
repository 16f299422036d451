//! What keeps a stage from failing quietly: a fault that must stop the
//! whole stage, and panics turned into text that can be logged and shown.

use std::any::Any;
use std::sync::OnceLock;

/// A failure no partition can work around (the producer is beyond use):
/// set once by whoever meets it, read by the consumer loop, which then
/// stops the stage with this reason and a non-zero exit.
#[derive(Debug, Default)]
pub(crate) struct StageFault {
    reason: OnceLock<String>,
}

impl StageFault {
    /// Record why the stage must stop; the first reason wins.
    pub(crate) fn set(&self, reason: String) {
        if self.reason.set(reason.clone()).is_ok() {
            tracing::error!(%reason, "the stage cannot go on; stopping");
        }
    }

    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// A panic's message, as far as it can be read.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::{StageFault, panic_message};

    #[test]
    fn the_first_fault_wins() {
        let fault = StageFault::default();
        assert_eq!(fault.reason(), None);
        fault.set("producer fenced".into());
        fault.set("later".into());
        assert_eq!(fault.reason(), Some("producer fenced"));
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let text = std::panic::catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_message(&*text), "static text");
        let formatted = std::panic::catch_unwind(|| panic!("offset {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*formatted), "offset 7");
    }
}
