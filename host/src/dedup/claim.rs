//! Claims: who is handling a key right now.
//!
//! Checking for a done-mark and then handling the message is not enough
//! when two copies of one message arrive on two partitions (or two hosts)
//! at once: both find no mark and both are handled. So a worker first
//! claims the key, atomically; only the winner handles the message. The
//! claim is a lease: a holder that crashes stops renewing it and it runs
//! out, so a copy waiting elsewhere can take over. The done-mark, written
//! once the message's effects are acknowledged, replaces the claim.

use std::fmt;

/// The value a done-mark holds. `1`, as marks have always been written, so
/// marks written before claims existed still count as done.
pub(crate) const DONE_MARK: &str = "1";

/// The token a worker's claims hold: unique per worker (and per worker
/// restart), and readable in logs: which host, process and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimHolder(String);

impl ClaimHolder {
    /// A fresh token for one worker; `worker` names it (its partition).
    pub fn new(worker: &str) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned());
        ClaimHolder(format!(
            "claim:{host}:{pid}:{worker}:{nonce:016x}",
            pid = std::process::id(),
            nonce = rand::random::<u64>()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClaimHolder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What claiming one key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is now claimed by the asking holder (freshly, after an
    /// expired claim, or again): handle the message.
    Claimed,
    /// The key is marked done: the message is a duplicate.
    Done,
    /// Another holder's claim is live: wait for its done-mark or for its
    /// lease to run out. The holder's token, for logs.
    HeldElsewhere(String),
}

/// What renewing one claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Still ours, lease extended.
    Renewed,
    /// Marked done in the meantime (by us or by a holder that took over):
    /// nothing left to renew, and nothing was lost.
    Done,
    /// Gone (expired, or released by hand) or claimed by another holder
    /// after our lease ran out: someone else may handle the message too.
    Lost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_unique_and_never_look_like_a_done_mark() {
        let first = ClaimHolder::new("in/0");
        let second = ClaimHolder::new("in/0");
        assert_ne!(first, second);
        assert!(first.as_str().starts_with("claim:"), "{first}");
        assert!(first.as_str().contains(":in/0:"), "{first}");
        assert_ne!(first.as_str(), DONE_MARK);
    }
}
