//! Timing a stage in the benches: from the first record received to the
//! last one finished, with the process's CPU time and its largest thread
//! count over the same span.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice::pipeline::{Stage, StageSummary};

/// What [`time_stage`] measured.
pub struct Timed {
    pub elapsed: Duration,
    /// CPU time of this process (every thread) over `elapsed`.
    pub cpu: Duration,
    /// The most threads this process had at once while the stage ran:
    /// what concurrent plugin calls cost in threads.
    pub peak_threads: usize,
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
            let mut peak_threads = 0;
            loop {
                let snapshot = counters.snapshot();
                if first.is_none() && snapshot.received > 0 {
                    first = Some((Instant::now(), process_cpu()));
                }
                peak_threads = peak_threads.max(process_threads());
                if snapshot.finished >= count || done.load(Ordering::Relaxed) {
                    return first.map(|(at, cpu)| (at.elapsed(), process_cpu() - cpu, peak_threads));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let summary = run(stage);
    done.store(true, Ordering::Relaxed);
    let (elapsed, cpu, peak_threads) = watch.join().expect("watcher").expect("the stage received messages");
    Timed {
        elapsed,
        cpu,
        peak_threads,
        summary,
    }
}

/// Threads of this process now.
pub fn process_threads() -> usize {
    thread_count("self")
}

/// Threads of process `pid` (or `"self"`) now, from `/proc/<pid>/status`;
/// 0 once it has gone.
pub fn thread_count(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .and_then(|count| count.trim().parse().ok())
        })
        .unwrap_or(0)
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
