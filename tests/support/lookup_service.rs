//! A small HTTP service for plugins that call out (`enrich-http`,
//! `webhook`), over plain HTTP or TLS, recording every request it is sent.
//!
//! What it answers depends on the request's subject: the body it is
//! POSTed, or the last path segment (percent-decoded) of a GET:
//! - `status:NNN`: status NNN (429 and 503 with `Retry-After: 2`);
//! - `once:NNN[:TAG]`: status NNN the first time this subject is sent,
//!   then as anything else (a service that recovers; a tag keeps subjects
//!   apart);
//! - `hang-up`: the connection is closed without an answer;
//! - `big`: 200 with 64 KiB;
//! - `slow`: 200 after two seconds;
//! - `not-json`: 200 with a body that is not JSON;
//! - anything else: 200 with `looked-up:<subject>` to a POST, and with the
//!   JSON `{"name":"<subject>","length":N}` to a GET (N in characters).
//!
//! A request to a path ending in `/early` is answered 400 as soon as its
//! head is read, and the connection closed: a server may answer before the
//! client has finished its body.
//!
//! A test may also slow every answer down ([`LookupService::set_delay`]),
//! take the service down (every answer 503 without `Retry-After`,
//! [`LookupService::set_down`]), and read how many requests it was
//! answering at once at most ([`LookupService::max_at_once`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

use crate::tls::CertificateFiles;

/// One request as the service received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the service read it.
    pub at: Instant,
}

impl SeenRequest {
    /// What decides the answer: a GET's last path segment, percent-decoded,
    /// else the body.
    pub fn subject(&self) -> Vec<u8> {
        if self.method == "GET" {
            let segment = self.path.rsplit('/').next().unwrap_or_default();
            return percent_encoding::percent_decode_str(segment).collect();
        }
        self.body.clone()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What a test changes about the service while it runs.
#[derive(Default)]
struct Behaviour {
    delay_ms: AtomicU64,
    down: AtomicBool,
    at_once: AtomicUsize,
    max_at_once: AtomicUsize,
}

/// Counts a request as being answered while it lives.
struct Answering<'a>(&'a Behaviour);

impl<'a> Answering<'a> {
    fn start(behaviour: &'a Behaviour) -> Self {
        let now = behaviour.at_once.fetch_add(1, Ordering::SeqCst) + 1;
        behaviour.max_at_once.fetch_max(now, Ordering::SeqCst);
        Answering(behaviour)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.at_once.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The running service; stops when dropped.
pub struct LookupService {
    pub address: SocketAddr,
    scheme: &'static str,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    behaviour: Arc<Behaviour>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LookupService {
    /// Plain HTTP on a free loopback port.
    pub fn start() -> Self {
        Self::serve(None)
    }

    /// HTTPS with `certificate` (made for 127.0.0.1).
    pub fn start_tls(certificate: &CertificateFiles) -> Self {
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("TLS acceptor");
        acceptor
            .set_private_key_file(&certificate.key, SslFiletype::PEM)
            .expect("TLS key");
        acceptor
            .set_certificate_chain_file(&certificate.certificate)
            .expect("TLS certificate");
        Self::serve(Some(Arc::new(acceptor.build())))
    }

    fn serve(tls: Option<Arc<SslAcceptor>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the lookup service");
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Behaviour::default());
        let stop = Arc::new(AtomicBool::new(false));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let thread = {
            let requests = requests.clone();
            let behaviour = behaviour.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let requests = requests.clone();
                    let behaviour = behaviour.clone();
                    let tls = tls.clone();
                    std::thread::spawn(move || {
                        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream) {
                                    answer(stream, &requests, &behaviour);
                                }
                            }
                            None => answer(stream, &requests, &behaviour),
                        }
                    });
                }
            })
        };
        LookupService {
            address,
            scheme,
            requests,
            behaviour,
            stop,
            thread: Some(thread),
        }
    }

    /// `scheme://127.0.0.1:port`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// The URL the plugin's `lookup-url` should name.
    pub fn lookup_url(&self) -> String {
        format!("{}/lookup", self.origin())
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait this long before answering anything (after reading it).
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// While down, every request is answered 503 without `Retry-After`.
    pub fn set_down(&self, down: bool) {
        self.behaviour.down.store(down, Ordering::SeqCst);
    }

    /// The most requests the service was answering at one time.
    pub fn max_at_once(&self) -> usize {
        self.behaviour.max_at_once.load(Ordering::SeqCst)
    }
}

impl Drop for LookupService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(stream: impl Read + Write, requests: &Mutex<Vec<SeenRequest>>, behaviour: &Behaviour) {
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    // Counted from the request's arrival until just before its answer is
    // written: once the client can have the answer, its call may end and
    // the next begin, which must not count as one more at once.
    let answering = Answering::start(behaviour);
    let delay = behaviour.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    if request.path.ends_with("/early") {
        // Recorded before the answer, so that a test that has the answer
        // sees the request.
        requests.lock().unwrap().push(request);
        drop(answering);
        let stream = reader.get_mut();
        let body = b"answered before the body";
        let head = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
        let _ = stream.flush();
        return;
    }
    let subject = request.subject();
    let first_time = {
        let mut requests = requests.lock().unwrap();
        let seen = requests.iter().any(|earlier| earlier.subject() == subject);
        requests.push(request.clone());
        !seen
    };
    let down = behaviour.down.load(Ordering::SeqCst);
    let (status, body) = match std::str::from_utf8(&subject).unwrap_or("") {
        _ if down => (503, b"down".to_vec()),
        "hang-up" => return,
        text if text.starts_with("once:") && first_time => {
            let status: u16 = text["once:".len()..]
                .split(':')
                .next()
                .and_then(|code| code.parse().ok())
                .unwrap_or(500);
            (status, format!("status {status}").into_bytes())
        }
        text if text.starts_with("status:") => {
            let status: u16 = text["status:".len()..].parse().unwrap_or(500);
            (status, format!("status {status}").into_bytes())
        }
        "big" => (200, vec![b'x'; 64 * 1024]),
        "slow" => {
            std::thread::sleep(Duration::from_secs(2));
            (200, b"slow answer".to_vec())
        }
        "not-json" => (200, b"<html>not json</html>".to_vec()),
        text if request.method == "GET" => {
            let answer = serde_json::json!({ "name": text, "length": text.chars().count() });
            (200, answer.to_string().into_bytes())
        }
        _ => {
            let mut body = b"looked-up:".to_vec();
            body.extend_from_slice(&subject);
            (200, body)
        }
    };
    drop(answering);
    let stream = reader.get_mut();
    let retry_after = match status {
        _ if down => "",
        429 | 503 => "retry-after: 2\r\n",
        _ => "",
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n{retry_after}connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}

fn read_request(reader: &mut impl BufRead) -> Option<SeenRequest> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.clone())
    };
    let mut body = Vec::new();
    if path.ends_with("/early") {
        // Its body is left unread until it is answered.
    } else if let Some(length) = header("content-length") {
        body.resize(length.parse().ok()?, 0);
        reader.read_exact(&mut body).ok()?;
    } else if header("transfer-encoding").is_some_and(|coding| coding.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(SeenRequest {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}
