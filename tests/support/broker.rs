//! A real Kafka-protocol broker (tansu) on a free loopback port, started
//! for a test and killed when the test ends, pass or fail.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::kill_with_parent;

/// A running tansu broker with in-memory storage.
pub struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    /// Start a broker and wait until it accepts connections.
    pub fn start() -> Broker {
        Broker::start_on(free_port())
    }

    /// Start a broker on `port`, such as one a stage was already told to
    /// use before its broker was up.
    pub fn start_on(port: u16) -> Broker {
        Broker::start_with(port, &[])
    }

    /// Start a broker that requires SASL authentication (SCRAM); it knows
    /// no users, so every client is refused.
    pub fn start_requiring_authentication() -> Broker {
        Broker::start_with(free_port(), &["--authentication"])
    }

    /// Start a broker on `port` keeping its data in an SQLite file in
    /// `dir`, so it can be stopped (dropped) and started again with its
    /// topics, records and the groups' offsets intact, as a Kafka broker
    /// restart keeps them. Much slower than the in-memory storage: only for
    /// tests of a restart.
    pub fn start_keeping_data(port: u16, dir: &Path) -> Broker {
        Broker::start_in(port, &["--storage-engine", "sqlite://tansu.db"], Some(dir))
    }

    fn start_with(port: u16, extra_args: &[&str]) -> Broker {
        let mut args = vec!["--storage-engine", "memory://tansu/"];
        args.extend_from_slice(extra_args);
        Broker::start_in(port, &args, None)
    }

    /// `args` after the listener's; `dir` is the working directory (where
    /// SQLite storage puts its file).
    fn start_in(port: u16, args: &[&str], dir: Option<&Path>) -> Broker {
        let address = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(tansu_binary());
        command
            .args([
                "broker",
                "--listener-url",
                &address,
                "--advertised-listener-url",
                &address,
            ])
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        kill_with_parent(&mut command);
        let child = command.spawn().expect("tansu starts (install it with scripts/setup)");
        let broker = Broker { child, port };
        broker.wait_until_listening(Duration::from_secs(20));
        broker
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_until_listening(&self, limit: Duration) {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < limit,
                "tansu did not listen on port {} within {limit:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// `$TANSU_BIN`, else `tansu` from the cargo bin directory or `PATH`.
fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return path.into();
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    match cargo_home.map(|home| home.join("bin/tansu")) {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("tansu"),
    }
}
