//! A bare HTTP/1.1 GET, enough to scrape a stage's status endpoints.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` from `address` (`host:port`); the status code and body.
pub fn get(address: &str, path: &str) -> (u16, String) {
    try_get(address, path).unwrap_or_else(|error| panic!("GET {path} from {address}: {error}"))
}

/// [`get`], with a failure to connect or to read the answer (in 10 s) as an
/// error rather than a panic.
pub fn try_get(address: &str, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok((status, body))
}

/// Wait until `GET path` answers `status` (or panic after `limit`).
pub fn wait_for_status(address: &str, path: &str, status: u16, limit: Duration) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Ok((code, body)) = try_get(address, path) {
            if code == status {
                return body;
            }
            assert!(started.elapsed() < limit, "{path} still answers {code}: {body}");
        } else {
            assert!(started.elapsed() < limit, "{path} never answered on {address}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn dechunk(mut body: &str) -> String {
    let mut text = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        text.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    text
}

/// Scrape `/stats` until `done` says the numbers are final (or panic,
/// showing the last numbers, after `limit`).
pub fn stats_when(address: &str, limit: Duration, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = get(address, "/stats");
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).expect("/stats is JSON");
        if done(&stats) {
            return stats;
        }
        assert!(started.elapsed() < limit, "/stats never got there: {stats:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
