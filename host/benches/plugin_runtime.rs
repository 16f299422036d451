//! Plugin call throughput through sluice's own runtime: what one worker
//! (one core) can push through a plugin, with the per-call deadline and
//! memory limiter on, as in production.
//!
//! Run with `cargo bench --bench plugin_runtime` after `scripts/build-plugins`.
//! Targets (2-core machine, Rust guest, 100-byte values): 300k msgs/s with
//! single `handle` calls on a reused instance, 500k msgs/s with
//! `handle-batch` of 100.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice::plugin::{Message, PluginRuntime, PluginSettings, PluginWorker};

const VALUE_BYTES: usize = 100;
const BATCH: usize = 100;
const WARM_UP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);

struct Case {
    label: &'static str,
    target_per_second: f64,
    batched: bool,
}

fn main() {
    // A backtrace captured per trap would distort nothing here, but the
    // environment variable also slows error paths; keep runs comparable.
    // SAFETY: single-threaded at this point; nothing else reads the env.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let plugin_path: PathBuf = root.join("plugins/dist/rust/uppercase.wasm");
    if !plugin_path.is_file() {
        eprintln!("{} is missing: run scripts/build-plugins first", plugin_path.display());
        std::process::exit(1);
    }
    let runtime = PluginRuntime::new(None).expect("runtime");
    let plugin = runtime
        .load_file(&plugin_path, PluginSettings::default())
        .expect("uppercase loads");

    let messages: Vec<Message> = (0..BATCH as i64)
        .map(|offset| {
            let mut message = Message::new("bench", 0, offset, Some(vec![b'a'; VALUE_BYTES]));
            message.key = Some(format!("key-{offset}").into_bytes());
            message
        })
        .collect();

    println!("plugin runtime: uppercase (Rust guest), {VALUE_BYTES}-byte values, one worker");
    println!("{:<34} {:>14} {:>14}", "case", "msgs/s", "target");
    for case in [
        Case {
            label: "handle, reused instance",
            target_per_second: 300_000.0,
            batched: false,
        },
        Case {
            label: "handle-batch of 100",
            target_per_second: 500_000.0,
            batched: true,
        },
    ] {
        let mut worker = plugin.worker();
        run(&mut worker, &messages, case.batched, WARM_UP);
        let rate = run(&mut worker, &messages, case.batched, MEASURE);
        let verdict = if rate >= case.target_per_second {
            "ok"
        } else {
            "BELOW TARGET"
        };
        println!(
            "{:<34} {:>14} {:>14}  {verdict}",
            case.label,
            thousands(rate),
            thousands(case.target_per_second)
        );
    }
}

/// Messages per second over `duration`.
fn run(worker: &mut PluginWorker, messages: &[Message], batched: bool, duration: Duration) -> f64 {
    let started = Instant::now();
    let mut handled: u64 = 0;
    while started.elapsed() < duration {
        if batched {
            let verdicts = worker.handle_batch(messages).expect("batch call");
            handled += verdicts.len() as u64;
        } else {
            for message in messages {
                std::hint::black_box(worker.handle(message).expect("call"));
            }
            handled += messages.len() as u64;
        }
    }
    handled as f64 / started.elapsed().as_secs_f64()
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}
