//! Plugin call throughput through sluice's own runtime: what one worker
//! (one core) can push through a plugin, with the per-call deadline and
//! memory limiter on, as in production.
//!
//! Run with `cargo bench --bench plugin_runtime` after `scripts/build-plugins`.
//! Measures the `uppercase` example in Rust, Python and JavaScript, single
//! `handle` calls on a reused instance and `handle-batch` of 100, in one
//! run. Targets (2-core machine, Rust guest, 100-byte values): 300k msgs/s
//! single, 500k msgs/s batched. Python and JavaScript have no target; they
//! are printed to show what a language costs per call.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice::plugin::{Message, PluginRuntime, PluginSettings, PluginWorker};

const VALUE_BYTES: usize = 100;
const BATCH: usize = 100;
const WARM_UP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);

/// One guest language: its built `uppercase` and the targets it must meet.
struct Guest {
    language: &'static str,
    dist_folder: &'static str,
    single_target: Option<f64>,
    batch_target: Option<f64>,
}

const GUESTS: [Guest; 3] = [
    Guest {
        language: "Rust",
        dist_folder: "rust",
        single_target: Some(300_000.0),
        batch_target: Some(500_000.0),
    },
    Guest {
        language: "Python",
        dist_folder: "python",
        single_target: None,
        batch_target: None,
    },
    Guest {
        language: "JavaScript",
        dist_folder: "js",
        single_target: None,
        batch_target: None,
    },
];

fn main() {
    // A backtrace captured per trap would distort nothing here, but the
    // environment variable also slows error paths; keep runs comparable.
    // SAFETY: single-threaded at this point; nothing else reads the env.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let runtime = PluginRuntime::new(None).expect("runtime");
    let messages: Vec<Message> = (0..BATCH as i64)
        .map(|offset| {
            let mut message = Message::new("bench", 0, offset, Some(vec![b'a'; VALUE_BYTES]));
            message.key = Some(format!("key-{offset}").into_bytes());
            message
        })
        .collect();

    println!("plugin runtime: uppercase, {VALUE_BYTES}-byte values, one worker");
    println!("{:<44} {:>14} {:>14}", "case", "msgs/s", "target");
    for guest in &GUESTS {
        let plugin_path: PathBuf = root.join("plugins/dist").join(guest.dist_folder).join("uppercase.wasm");
        if !plugin_path.is_file() {
            eprintln!("{} is missing: run scripts/build-plugins first", plugin_path.display());
            std::process::exit(1);
        }
        // Compiling a Python or JavaScript component takes seconds the first
        // time; after that it loads from the compiled-plugin cache.
        let plugin = runtime
            .load_file(&plugin_path, PluginSettings::default())
            .expect("uppercase loads");
        for (shape, batched, target) in [
            ("handle, reused instance", false, guest.single_target),
            ("handle-batch of 100", true, guest.batch_target),
        ] {
            let mut worker = plugin.worker();
            run(&mut worker, &messages, batched, WARM_UP);
            let rate = run(&mut worker, &messages, batched, MEASURE);
            let (target_text, verdict) = match target {
                Some(target) if rate >= target => (thousands(target), "ok"),
                Some(target) => (thousands(target), "BELOW TARGET"),
                None => ("-".to_owned(), ""),
            };
            let label = format!("{}: {shape}", guest.language);
            let line = format!("{label:<44} {:>14} {target_text:>14}  {verdict}", thousands(rate));
            println!("{}", line.trim_end());
        }
    }
}

/// Messages per second over `duration`, the calls awaited one after
/// another on one thread, as a stage's call task awaits them.
fn run(worker: &mut PluginWorker, messages: &[Message], batched: bool, duration: Duration) -> f64 {
    let calls = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    calls.block_on(async {
        let started = Instant::now();
        let mut handled: u64 = 0;
        while started.elapsed() < duration {
            if batched {
                let verdicts = worker.handle_batch(messages).await.expect("batch call");
                handled += verdicts.len() as u64;
            } else {
                for message in messages {
                    std::hint::black_box(worker.handle(message).await.expect("call"));
                }
                handled += messages.len() as u64;
            }
        }
        handled as f64 / started.elapsed().as_secs_f64()
    })
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
