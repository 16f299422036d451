//! Plugin instances shared by every partition of the stage. A call borrows
//! one for its duration and gives it back, so a stage has as many live
//! instances as plugin calls may run at once (`stage.concurrency`), not one
//! per assigned partition. Each instance keeps its linear memory at the
//! size of the largest batch it has seen; with 64 partitions of large
//! records, one instance per partition was most of the process's memory.
//!
//! Instances of a replaced plugin version are dropped as they come back,
//! so a hot reload leaves nothing of the old version behind once its last
//! calls end.

use std::sync::Mutex;

use crate::plugin::PluginWorker;

/// Idle instances, each with the generation of the plugin version it runs.
/// Generic only so that its rules can be tested without a plugin.
pub(crate) struct InstancePool<W = PluginWorker> {
    idle: Mutex<Vec<(u64, W)>>,
}

impl<W> Default for InstancePool<W> {
    fn default() -> Self {
        InstancePool {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<W> InstancePool<W> {
    /// An idle instance of the version of `generation`, or a new one from
    /// `make`. Idle instances of other versions are dropped.
    pub(crate) fn borrow(&self, generation: u64, make: impl FnOnce() -> W) -> W {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.retain(|(held, _)| *held == generation);
        match idle.pop() {
            Some((_, worker)) => worker,
            None => {
                drop(idle);
                make()
            }
        }
    }

    /// Return an instance after its call; one of a version that is no
    /// longer `serving` is dropped instead.
    pub(crate) fn give_back(&self, generation: u64, serving: u64, worker: W) {
        if generation != serving {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((generation, worker));
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_given_back_is_borrowed_again() {
        let pool = InstancePool::default();
        let first = pool.borrow(3, || "first");
        pool.give_back(3, 3, first);
        assert_eq!(pool.borrow(3, || "new"), "first");
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn as_many_instances_as_calls_at_once() {
        let pool = InstancePool::default();
        let mut made = 0;
        for _ in 0..100 {
            let a = pool.borrow(1, || {
                made += 1;
                made
            });
            let b = pool.borrow(1, || {
                made += 1;
                made
            });
            pool.give_back(1, 1, a);
            pool.give_back(1, 1, b);
        }
        assert_eq!(made, 2, "two calls at a time need two instances, however many calls");
        assert_eq!(pool.idle(), 2);
    }

    #[test]
    fn instances_of_a_replaced_version_are_dropped() {
        let pool = InstancePool::default();
        let old = pool.borrow(1, || "old");
        pool.give_back(1, 2, old);
        assert_eq!(pool.idle(), 0, "given back after a reload");

        let old = pool.borrow(1, || "old");
        pool.give_back(1, 1, old);
        assert_eq!(pool.borrow(2, || "new"), "new");
        assert_eq!(pool.idle(), 0, "the old version's idle instance is gone");
    }
}
