//! A handler written in its own repository: `sluice new`, `sluice build`,
//! `sluice test --expect` and `sluice dev`, run in temporary folders outside
//! this repository, as a handler author runs them.
//!
//! The Python and JavaScript tools are installed into `plugins/.tools` (as
//! `scripts/build-plugins` does, so CI installs them once) and the Rust
//! projects share one cargo target folder, so the SDK's dependencies
//! compile once for all of them.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_tests::process::kill_with_parent;
use sluice_tests::{shared_plugin_cache, sluice_bin, workspace_root};
use tempfile::TempDir;

/// `sluice` with the test's tool folder, cargo target and plugin cache.
fn sluice(dir: &Path) -> Command {
    let mut command = Command::new(sluice_bin());
    command
        .current_dir(dir)
        .env("SLUICE_TOOLS_DIR", workspace_root().join("plugins/.tools"))
        .env("CARGO_TARGET_DIR", workspace_root().join("target/handler-projects"))
        .env("SLUICE_CACHE_DIR", shared_plugin_cache());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("sluice runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The shell block of the README's "Write a handler" section that starts
/// a project in `language`.
fn readme_block(language: &str) -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Write a handler"))
        .expect("the README has a \"Write a handler\" section");
    section
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .find(|block| block.contains(&format!("sluice new my-handler --lang {language}\n")))
        .unwrap_or_else(|| panic!("no README block starts a {language} project"))
        .to_owned()
}

/// Run a README block with bash, as written, in `dir`, with `sluice` on
/// the PATH.
fn run_readme_block(block: &str, dir: &Path) -> Output {
    let bin_dir = sluice_bin().parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(dir)
        .env("PATH", path)
        .env("SLUICE_TOOLS_DIR", workspace_root().join("plugins/.tools"))
        .env("CARGO_TARGET_DIR", workspace_root().join("target/handler-projects"))
        .env("SLUICE_CACHE_DIR", shared_plugin_cache());
    run(&mut command)
}

/// The README's commands make a project in `language` whose handler passes
/// its expected results; a changed handler fails them with the field that
/// changed, and `--update` makes them pass again.
fn handler_project_round_trip(language: &str, handler: &str, upper: &str, lower: &str) {
    let root = TempDir::new().unwrap();
    let started = Instant::now();
    let output = run_readme_block(&readme_block(language), root.path());
    let stdout = succeeded(&output);
    eprintln!(
        "{language}: README commands in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(stdout.contains("created my-handler"), "{stdout}");
    assert!(
        stdout.contains("built my-handler/dist/my-handler.wasm") || stdout.contains("built dist/my-handler.wasm"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok: 7 results as expected in expected.jsonl"),
        "{stdout}"
    );

    let project = root.path().join("my-handler");
    let again = succeeded(&run(sluice(&project).arg("build")));
    assert!(
        again.starts_with("unchanged dist/my-handler.wasm"),
        "an unchanged project is not rebuilt: {again}"
    );

    let source = project.join(handler);
    let code = std::fs::read_to_string(&source).unwrap();
    assert!(code.contains(upper), "{handler} upper-cases with {upper}");
    std::fs::write(&source, code.replace(upper, lower)).unwrap();
    let rebuilt = succeeded(&run(sluice(&project).arg("build")));
    assert!(rebuilt.starts_with("built dist/my-handler.wasm"), "{rebuilt}");

    let expect = |update: bool| {
        let mut command = sluice(&project);
        command.args([
            "test",
            "dist/my-handler.wasm",
            "--input",
            "messages.jsonl",
            "--expect",
            "expected.jsonl",
        ]);
        if update {
            command.arg("--update");
        }
        run(&mut command)
    };
    let failed = expect(false);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "a changed handler fails its expected results"
    );
    let diff = text(&failed.stdout);
    assert!(diff.contains("message 1 (events/0@10) differs:"), "{diff}");
    assert!(
        diff.contains(r#"outputs[0].value: expected "HELLO, WORLD", got "hello, world""#),
        "{diff}"
    );
    succeeded(&expect(true));
    let passed = succeeded(&expect(false));
    assert!(passed.contains("ok: 7 results as expected"), "{passed}");
}

#[test]
fn a_rust_handler_project_builds_and_tests_outside_the_repository() {
    handler_project_round_trip("rust", "src/lib.rs", "text.to_uppercase()", "text.to_lowercase()");
}

#[test]
fn a_python_handler_project_builds_and_tests_outside_the_repository() {
    handler_project_round_trip("python", "handler.py", "text.upper()", "text.lower()");
}

#[test]
fn a_javascript_handler_project_builds_and_tests_outside_the_repository() {
    handler_project_round_trip("js", "handler.js", "text.toUpperCase()", "text.toLowerCase()");
}

#[test]
fn build_refuses_a_folder_without_a_handler_and_says_what_to_do() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("main.go"), "package main\n").unwrap();
    let output = run(sluice(dir.path()).arg("build"));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no handler found"), "{stderr}");
    assert!(stderr.contains("sluice new"), "{stderr}");
}

#[test]
fn an_unknown_language_is_refused_with_the_ones_there_are() {
    let dir = TempDir::new().unwrap();
    for command in [
        vec!["new", "handler", "--lang", "go"],
        vec!["build", ".", "--lang", "go"],
    ] {
        let output = run(sluice(dir.path()).args(&command));
        assert_eq!(output.status.code(), Some(2), "{command:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains("invalid value 'go'"), "{stderr}");
        assert!(stderr.contains("rust, python, js"), "{stderr}");
    }
    assert!(!dir.path().join("handler").exists(), "nothing is written");
}

#[test]
fn a_handler_that_is_not_a_valid_component_is_not_written() {
    let out = TempDir::new().unwrap();
    let output_file = out.path().join("wrong-world.wasm");
    let crate_dir = workspace_root().join("plugins/rust/testing/wrong-world");
    let output = run(sluice(&crate_dir)
        .env_remove("CARGO_TARGET_DIR")
        .arg("build")
        .arg("--output")
        .arg(&output_file));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("which is not a plugin sluice can run"), "{stderr}");
    assert!(
        stderr.contains("message-handler"),
        "the error names the world: {stderr}"
    );
    assert!(
        !output_file.exists(),
        "a component that fails the check never becomes the output"
    );
}

#[test]
fn new_leaves_a_folder_with_files_alone() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let output = run(sluice(dir.path()).args(["new", ".", "--lang", "rust", "--name", "mine"]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("already exists"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A running `sluice dev`, its stdout and stderr collected as they come.
struct DevLoop {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<String>>,
}

impl DevLoop {
    fn start(project: &Path) -> DevLoop {
        let mut command = sluice(project);
        command
            .arg("dev")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        kill_with_parent(&mut command);
        let mut child = command.spawn().expect("sluice dev starts");
        let lines = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut lines = lines.lock().unwrap();
                    lines.push_str(&line);
                    lines.push('\n');
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        DevLoop { child, stdin, lines }
    }

    /// Wait until the output so far, from byte `from` on, contains `text`;
    /// returns where it ends.
    fn wait_for(&self, text: &str, from: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some(at) = lines[from..].find(text) {
                    return from + at + text.len();
                }
                assert!(
                    Instant::now() < deadline,
                    "no {text:?} within {timeout:?}; sluice dev printed:\n{lines}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for DevLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dev_rebuilds_and_reloads_on_each_change_and_keeps_serving_through_a_broken_one() {
    let root = TempDir::new().unwrap();
    let project = root.path().join("dev-handler");
    succeeded(&run(sluice(root.path()).args(["new", "dev-handler", "--lang", "rust"])));
    let source = project.join("src/lib.rs");
    let mut dev = DevLoop::start(&project);

    let timeout = Duration::from_secs(240);
    let at = dev.wait_for(r#"key "user-1"  value "HELLO, WORLD"  (version "#, 0, timeout);
    dev.wait_for(r#"key "user-2"  reason "value is not valid UTF-8"#, 0, timeout);

    let code = std::fs::read_to_string(&source).unwrap();
    std::fs::write(
        &source,
        code.replace("text.to_uppercase()", r#"text.to_uppercase() + "!""#),
    )
    .unwrap();
    let at = dev.wait_for("sluice dev: version ", at, timeout);
    let at = dev.wait_for(r#"key "user-1"  value "HELLO, WORLD!"  (version "#, at, timeout);

    let code = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, format!("{code}\ncompile_error!(\"broken on purpose\");\n")).unwrap();
    let at = dev.wait_for("broken on purpose", at, timeout);
    let at = dev.wait_for("build failed, the running version keeps serving", at, timeout);
    writeln!(dev.stdin, r#"{{"key": "typed", "value": "still serving"}}"#).unwrap();
    dev.wait_for(r#"key "typed"  value "STILL SERVING!""#, at, timeout);

    // Ctrl-C. SAFETY: kill(2) on our own child, which has not been waited for.
    unsafe { libc::kill(dev.child.id() as i32, libc::SIGINT) };
    let status = dev.child.wait().unwrap();
    assert!(
        status.success(),
        "Ctrl-C stops sluice dev cleanly: {status}\n{}",
        dev.output()
    );
}

#[test]
fn a_python_projects_own_dependencies_are_installed_and_bundled() {
    let root = TempDir::new().unwrap();
    succeeded(&run(sluice(root.path()).args(["new", "with-deps", "--lang", "python"])));
    let project = root.path().join("with-deps");
    let pyproject = std::fs::read_to_string(project.join("pyproject.toml")).unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        pyproject.replace(
            r#"dependencies = ["sluice-plugin==0.1.0"]"#,
            r#"dependencies = ["sluice-plugin==0.1.0", "six==1.16.0"]"#,
        ),
    )
    .unwrap();
    let handler = std::fs::read_to_string(project.join("handler.py")).unwrap();
    std::fs::write(
        project.join("handler.py"),
        handler
            .replace("from sluice_plugin import", "import six\nfrom sluice_plugin import")
            .replace("text.upper()", "six.ensure_str(text).upper()"),
    )
    .unwrap();
    let built = succeeded(&run(sluice(&project).arg("build")));
    assert!(built.starts_with("built dist/with-deps.wasm"), "{built}");
    assert!(
        project.join(".sluice/python-packages/six.py").is_file(),
        "six is installed for the build"
    );
    let tested = succeeded(&run(sluice(&project).args([
        "test",
        "dist/with-deps.wasm",
        "--input",
        "messages.jsonl",
        "--expect",
        "expected.jsonl",
    ])));
    assert!(tested.contains("ok: 7 results as expected"), "{tested}");
}
