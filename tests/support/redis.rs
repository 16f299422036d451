//! A real Redis (Debian's `redis-server`) on a free loopback port, started
//! for a test and killed when it ends. It can be stopped and started again
//! on the same port, to test a stage riding out an outage. Also a real
//! Redis Cluster of three such servers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::broker::free_port;
use crate::process::kill_with_parent;

/// A running Redis that keeps nothing on disk, or (started with
/// [`Redis::start_persistent`]) one that keeps every write across a kill.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    /// Where a persistent Redis keeps its append-only file.
    data_dir: Option<TempDir>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            data_dir: None,
        };
        redis.restart();
        redis
    }

    /// A Redis that fsyncs every write to an append-only file, so a
    /// [`Redis::restart`] (even after a kill) comes back with all its data,
    /// as a production Redis with `appendfsync always` does.
    pub fn start_persistent() -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            data_dir: Some(TempDir::new().expect("Redis data directory")),
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:<port>/` for `dedup.redis_url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill the server; the port stops answering (its data is gone, unless
    /// it is persistent).
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
            .args(["--save", "", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.data_dir {
            Some(dir) => command
                .arg("--dir")
                .arg(dir.path())
                .args(["--appendonly", "yes", "--appendfsync", "always"]),
            None => command.args(["--appendonly", "no"]),
        };
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

    /// The value of `key` as text (`GET`), `None` if it has none.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut connection = self.connect().expect("redis answers");
        redis::cmd("GET").arg(key).query(&mut connection).expect("GET")
    }

    /// Set `key` to `value` for `lifetime` (`SET key value PX ms`): for
    /// instance a claim, as a worker that then crashed would have left it.
    pub fn set_for(&self, key: &str, value: &str, lifetime: Duration) {
        let mut connection = self.connect().expect("redis answers");
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(lifetime.as_millis() as u64)
            .query(&mut connection)
            .expect("SET");
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

/// A Redis Cluster of three masters (no replicas) on free loopback ports,
/// its 16384 slots split between them by `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = TempDir::new().expect("cluster directory");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let mut command = Command::new("redis-server");
                command
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-port", &free_port().to_string()])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .args(["--cluster-node-timeout", "5000"])
                    .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                kill_with_parent(&mut command);
                command
                    .spawn()
                    .expect("redis-server starts (install Debian's redis-server; scripts/setup does)")
            })
            .collect();
        let cluster = RedisCluster {
            nodes,
            ports,
            _dir: dir,
        };
        cluster.wait_for_each_node();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_until_ok();
        cluster
    }

    /// `redis://127.0.0.1:<port>/` for each node, for `dedup.redis_url`.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// How many keys each node holds (`DBSIZE`), to see that a test's
    /// keys spread over several nodes.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|port| {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("node URL");
                let mut connection = client
                    .get_connection_with_timeout(Duration::from_secs(5))
                    .expect("node answers");
                redis::cmd("DBSIZE").query(&mut connection).expect("DBSIZE")
            })
            .collect()
    }

    /// The string at `key`, read from whichever node holds its slot.
    pub fn get(&self, key: &str) -> Option<String> {
        let client = redis::cluster::ClusterClient::new(self.urls()).expect("cluster URLs");
        let mut connection = client.get_connection().expect("the cluster answers");
        redis::cmd("GET").arg(key).query(&mut connection).expect("GET")
    }

    fn wait_for_each_node(&self) {
        for port in &self.ports {
            let started = Instant::now();
            while node_command(*port, "PING").is_none() {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "cluster node on port {port} did not answer within 20 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every node says `cluster_state:ok` (all slots served).
    fn wait_until_ok(&self) {
        let started = Instant::now();
        while !self
            .ports
            .iter()
            .all(|port| node_command(*port, "CLUSTER INFO").is_some_and(|info| info.contains("cluster_state:ok")))
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the cluster did not reach cluster_state:ok within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A command (words separated by spaces) sent to one node, its reply as
/// text; `None` if the node does not answer.
fn node_command(port: u16, words: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(5)).ok()?;
    let mut words = words.split(' ');
    let mut command = redis::cmd(words.next()?);
    for word in words {
        command.arg(word);
    }
    command.query::<String>(&mut connection).ok()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}
