//! `sluice run` as a child process, with its own stage file, cache and log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice::pipeline::{FaultInjection, Stage, StageSummary};
use sluice::plugin::{PluginRuntime, PluginSettings, PluginSlot};

use tempfile::TempDir;

use crate::process::kill_with_parent;
use crate::sluice_bin;

/// The usual shape of a test stage; `extra` is appended verbatim (more
/// tables such as `[retry]` or `[plugin.config]`).
pub struct StageSpec<'a> {
    pub brokers: &'a str,
    pub plugin: &'a Path,
    pub group: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub dead_letter: &'a str,
    pub extra: &'a str,
}

impl StageSpec<'_> {
    /// [`to_toml`](Self::to_toml) with `stage_keys` (lines such as
    /// `ordering = "key"`) added to its `[stage]` table.
    pub fn to_toml_with_stage_keys(&self, stage_keys: &str) -> String {
        self.to_toml().replacen(
            "commit_interval_ms = 200\n",
            &format!("commit_interval_ms = 200\n{stage_keys}\n"),
            1,
        )
    }

    pub fn to_toml(&self) -> String {
        format!(
            r#"[stage]
name = "test-stage"
commit_interval_ms = 200

[plugin]
path = "{plugin}"

[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["{input}"]
output_topic = "{output}"
dead_letter_topic = "{dead_letter}"

{extra}
"#,
            plugin = self.plugin.display(),
            brokers = self.brokers,
            group = self.group,
            input = self.input,
            output = self.output,
            dead_letter = self.dead_letter,
            extra = self.extra,
        )
    }
}

/// A stage file on disk plus a compiled-plugin cache, private unless
/// [`StageFile::sharing_cache`] says otherwise.
pub struct StageFile {
    pub dir: TempDir,
    pub path: PathBuf,
    cache_dir: PathBuf,
}

impl StageFile {
    /// The usual test stage: the built Rust plugin `plugin` between
    /// `topics` = [input, output, dead letter], with `extra` tables appended.
    pub fn for_plugin(brokers: &str, plugin: &str, group: &str, topics: [&str; 3], extra: &str) -> StageFile {
        StageFile::for_plugin_file(brokers, &crate::rust_plugin(plugin), group, topics, extra)
    }

    /// The usual test stage for a plugin file in any language.
    pub fn for_plugin_file(brokers: &str, plugin: &Path, group: &str, topics: [&str; 3], extra: &str) -> StageFile {
        StageFile::new(
            &StageSpec {
                brokers,
                plugin,
                group,
                input: topics[0],
                output: topics[1],
                dead_letter: topics[2],
                extra,
            }
            .to_toml(),
        )
    }

    pub fn new(toml: &str) -> StageFile {
        let dir = TempDir::new().expect("stage directory");
        let path = dir.path().join("stage.toml");
        std::fs::write(&path, toml).expect("write stage file");
        let cache_dir = dir.path().join("cache");
        StageFile { dir, path, cache_dir }
    }

    /// Compile the plugin into (or load it from) `cache_dir` instead of a
    /// private cache, such as [`crate::shared_plugin_cache`].
    pub fn sharing_cache(mut self, cache_dir: &Path) -> StageFile {
        self.cache_dir = cache_dir.to_owned();
        self
    }

    /// Start `sluice run` on this file; its log goes to `log_name` in the
    /// stage's directory.
    pub fn start(&self, log_name: &str) -> StageProcess {
        let log_path = self.dir.path().join(log_name);
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(sluice_bin());
        command
            .arg("run")
            .arg(&self.path)
            .env("SLUICE_CACHE_DIR", &self.cache_dir)
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".to_owned()),
            )
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null());
        kill_with_parent(&mut command);
        StageProcess {
            child: command.spawn().expect("sluice starts"),
            log: log_path,
        }
    }

    /// Run the stage inside this test process (so a mock cluster created
    /// here can be faulted under it), on a thread of its own, until
    /// `stop_after` messages are finished or [`InProcessStage::stop`].
    /// The file (and its plugin cache) lives as long as the stage.
    pub fn run_in_process(self, bootstrap_servers: &str, stop_after: Option<u64>) -> InProcessStage {
        let config = sluice::config::load(&self.path).expect("stage file");
        let plugin_runtime = PluginRuntime::new(Some(&self.cache_dir)).expect("plugin runtime");
        let plugin = plugin_runtime
            .load_file(&config.plugin.path, PluginSettings::of_stage(&config.plugin))
            .expect("plugin");
        let slot = Arc::new(PluginSlot::new(plugin, config.plugin.reload));
        let stage = Stage::new(config, slot, bootstrap_servers.to_owned()).expect("stage");
        let shutdown = stage.shutdown_flag();
        let faults = stage.fault_injection();
        let tokio = tokio::runtime::Runtime::new().expect("tokio");
        let thread = std::thread::spawn(move || {
            // Kept alive while the stage runs: it drives call deadlines.
            let _plugin_runtime = plugin_runtime;
            let _file = self;
            tokio.block_on(stage.run(stop_after)).map_err(|error| error.to_string())
        });
        InProcessStage {
            shutdown,
            thread,
            faults,
        }
    }

    /// Run `sluice run` to completion with a time limit; returns exit status
    /// and everything it printed.
    pub fn run_to_exit(&self, limit: Duration) -> (ExitStatus, String) {
        let mut process = self.start("run.log");
        let status = process.wait(limit).expect("sluice exits in time");
        (status, process.log())
    }
}

/// A stage running on a thread of the test process.
pub struct InProcessStage {
    shutdown: Arc<AtomicBool>,
    thread: JoinHandle<Result<StageSummary, String>>,
    faults: Arc<FaultInjection>,
}

impl InProcessStage {
    /// Wait for the stage to stop by itself (its `stop_after`).
    pub fn join(self) -> StageSummary {
        self.join_result().expect("the stage stops without an error")
    }

    /// Wait for the stage to stop, by itself or on an error of its own.
    pub fn join_result(self) -> Result<StageSummary, String> {
        self.thread.join().expect("stage thread")
    }

    /// Stop the stage as a signal would, and wait for it.
    pub fn stop(self) -> StageSummary {
        self.shutdown.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Stop the stage as a signal would; the time it took to stop.
    pub fn stop_timed(self) -> (Duration, Result<StageSummary, String>) {
        let started = Instant::now();
        self.shutdown.store(true, Ordering::Relaxed);
        let outcome = self.join_result();
        (started.elapsed(), outcome)
    }

    /// Faults to cause in the running stage.
    pub fn faults(&self) -> &FaultInjection {
        &self.faults
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// A running `sluice run`.
pub struct StageProcess {
    child: Child,
    log: PathBuf,
}

impl StageProcess {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send a signal (`libc::SIGTERM`, `libc::SIGKILL`, ...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Wait for exit, up to `limit`; `None` if it is still running.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for sluice") {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the stage has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Block until the log contains `text` (or `limit` passes).
    pub fn wait_for_log(&self, text: &str, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for StageProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
