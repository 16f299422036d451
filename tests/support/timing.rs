//! Timing a stage in the benches: from the first record received to the
//! last one finished, with the process's CPU time over the same span.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice::pipeline::{Stage, StageSummary};

/// What [`time_stage`] measured.
pub struct Timed {
    pub elapsed: Duration,
    /// CPU time of this process (every thread) over `elapsed`.
    pub cpu: Duration,
    pub summary: StageSummary,
}

/// Run `stage` through `run` (which drives it until `count` messages are
/// finished) while a watcher notes when the first record arrived and the
/// last was finished.
pub fn time_stage(stage: Stage, count: u64, run: impl FnOnce(Stage) -> StageSummary) -> Timed {
    let counters = stage.counters();
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut first = None;
            loop {
                let snapshot = counters.snapshot();
                if first.is_none() && snapshot.received > 0 {
                    first = Some((Instant::now(), process_cpu()));
                }
                if snapshot.finished >= count || done.load(Ordering::Relaxed) {
                    return first.map(|(at, cpu)| (at.elapsed(), process_cpu() - cpu));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let summary = run(stage);
    done.store(true, Ordering::Relaxed);
    let (elapsed, cpu) = watch.join().expect("watcher").expect("the stage received messages");
    Timed { elapsed, cpu, summary }
}

/// CPU time this process has used so far, all threads.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |value: libc::timeval| Duration::new(value.tv_sec as u64, value.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
