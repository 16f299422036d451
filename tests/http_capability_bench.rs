//! Outbound HTTP through the host, next to the same requests made by a
//! plain Rust client, against one loopback service, in one run.
//!
//! `cargo bench -p sluice-tests --bench http_capability` (after
//! `scripts/build-plugins`). The `enrich-http` plugin looks each message's
//! `id` up with a GET and adds the JSON answer to the message; the plain
//! client opens a connection, writes the same GET and reads the answer, as
//! the host does (one connection per request: the host pools none, so a
//! request never reuses a connection another origin's grant opened). The
//! service answers at once; both sides run on this machine's cores. Each
//! language's `enrich-http` runs the same requests: Rust over `wstd`,
//! Python over the SDK's `sluice_plugin.http`, JavaScript over `fetch`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sluice::capability::CapabilityGrants;
use sluice::plugin::{PluginLimits, PluginSettings, Verdict};
use sluice_tests::lookup_service::LookupService;
use sluice_tests::{Language, TestRuntime, text_message};

const REQUESTS: usize = 3_000;

fn main() {
    let service = LookupService::start();
    let plain = plain_client(service.address);
    println!("outbound HTTP, {REQUESTS} GETs to a loopback service answering 27 bytes of JSON at once");
    println!("  plain Rust client (std TcpStream)       {plain:>8.0} requests/s");
    for language in Language::ALL {
        let host = through_host(&service, language);
        let name = format!("sluice, {language:?} enrich-http plugin");
        println!("  {name:<38}  {host:>8.0} requests/s   {:.2} x plain", host / plain);
    }
}

/// Requests per second made by the plugin, one message per call.
fn through_host(service: &LookupService, language: Language) -> f64 {
    let test = TestRuntime::new();
    let grants: CapabilityGrants = toml::from_str(&format!(
        "[http]\nallowed_origins = [\"{}\"]\nallowed_addresses = [\"127.0.0.1\"]\n",
        service.origin()
    ))
    .expect("grant");
    let settings = PluginSettings {
        limits: PluginLimits {
            deadline_ms: 5_000,
            ..PluginLimits::default()
        },
        config: [("lookup-url".to_owned(), service.lookup_url())].into(),
        capabilities: Some(grants),
    };
    let plugin = test
        .runtime
        .load_file(&language.plugin("enrich-http"), settings)
        .expect("enrich-http loads");
    let mut worker = plugin.worker();
    let message = text_message(0, r#"{"id":"hello"}"#);
    // The first call of a Python or JavaScript instance warms it up.
    worker.handle_blocking(&message).expect("warm-up call");
    let started = Instant::now();
    for _ in 0..REQUESTS {
        let verdict = worker.handle_blocking(&message).expect("call");
        assert!(matches!(verdict, Verdict::Success(_)), "{verdict:?}");
    }
    REQUESTS as f64 / started.elapsed().as_secs_f64()
}

/// Requests per second of a plain client doing what the host does.
fn plain_client(address: SocketAddr) -> f64 {
    let started = Instant::now();
    for _ in 0..REQUESTS {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let request = format!("GET /lookup/hello HTTP/1.1\r\nhost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("write");
        let mut reader = BufReader::new(stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        assert_eq!(body, br#"{"name":"hello","length":5}"#);
    }
    REQUESTS as f64 / started.elapsed().as_secs_f64()
}
