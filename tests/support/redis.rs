//! A real Redis (Debian's `redis-server`) on a free loopback port, started
//! for a test and killed when it ends. It can be stopped and started again
//! on the same port, to test a stage riding out an outage.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::broker::free_port;
use crate::process::kill_with_parent;

/// A running Redis that keeps nothing on disk.
pub struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:<port>/` for `dedup.redis_url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill the server; the port stops answering (its data is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again on the same port (after [`Redis::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        kill_with_parent(&mut command);
        self.child = Some(
            command
                .spawn()
                .expect("redis-server starts (install Debian's redis-server; scripts/setup does)"),
        );
        let started = Instant::now();
        while !self.answers_ping() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not answer on port {} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Keys matching `pattern` (`KEYS`, fine for a test's small data set).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut connection = self.connect().expect("redis answers");
        redis::cmd("KEYS").arg(pattern).query(&mut connection).expect("KEYS")
    }

    /// Seconds a key has left to live (`TTL`).
    pub fn ttl(&self, key: &str) -> i64 {
        let mut connection = self.connect().expect("redis answers");
        redis::cmd("TTL").arg(key).query(&mut connection).expect("TTL")
    }

    fn answers_ping(&self) -> bool {
        self.connect()
            .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
            .is_ok()
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(5))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
