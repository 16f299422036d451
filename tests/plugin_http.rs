//! Plugins that call out: a stage's `[plugin.capabilities.http]` grant is
//! what a plugin can reach, and nothing else. Each test runs the
//! `enrich-http` (or `webhook`) example against a real HTTP(S) service on
//! loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice::capability::CapabilityGrants;
use sluice::plugin::{Header, Message, Plugin, PluginLimits, PluginSettings, Verdict};
use sluice_tests::lookup_service::LookupService;
use sluice_tests::{Language, TestRuntime, rust_plugin, text_message, tls};

/// Load `enrich-http` calling `lookup_url`, as a stage with this
/// `[plugin.capabilities]` table (TOML) would.
fn load(test: &TestRuntime, lookup_url: &str, capabilities: &str) -> Result<Plugin, String> {
    load_file(test, &rust_plugin("enrich-http"), lookup_url, capabilities)
}

/// The same for `plugin`, the example in any language.
fn load_file(test: &TestRuntime, plugin: &Path, lookup_url: &str, capabilities: &str) -> Result<Plugin, String> {
    load_configured(test, plugin, &[("lookup-url", lookup_url)], capabilities)
}

/// `plugin` with this `[plugin.config]` and `[plugin.capabilities]`.
fn load_configured(
    test: &TestRuntime,
    plugin: &Path,
    config: &[(&str, &str)],
    capabilities: &str,
) -> Result<Plugin, String> {
    // The recorder must be in place before a request is counted, or the
    // counts go nowhere and the tests that read them see none.
    sluice::observe::metrics::prometheus().expect("the test process's recorder");
    let grants: CapabilityGrants = toml::from_str(capabilities).expect("capabilities TOML");
    let settings = PluginSettings {
        limits: PluginLimits {
            deadline_ms: 5_000,
            ..PluginLimits::default()
        },
        config: config
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        capabilities: Some(grants),
    };
    test.runtime
        .load_file(plugin, settings)
        .map_err(|error| error.to_string())
}

fn granted(service: &LookupService) -> String {
    format!(
        "[http]\nallowed_origins = [\"{}\"]\nallowed_addresses = [\"127.0.0.1\"]\n",
        service.origin()
    )
}

/// The verdict on a message `{"id":"<id>"}`: the service's answer to
/// `GET <lookup-url>/<id>`.
fn lookup(plugin: &Plugin, id: &str) -> Verdict {
    handle(plugin, &format!("{{\"id\":{}}}", serde_json::Value::from(id)))
}

/// The verdict on a message whose value is `value`.
fn handle(plugin: &Plugin, value: &str) -> Verdict {
    plugin
        .worker()
        .handle_blocking(&text_message(0, value))
        .expect("the call itself succeeds")
}

/// The one output's value, as text.
fn output_text(verdict: Verdict) -> String {
    match verdict {
        Verdict::Success(outputs) if outputs.len() == 1 => {
            String::from_utf8(outputs[0].value.clone().expect("a value")).expect("text")
        }
        other => panic!("expected one output, got {other:?}"),
    }
}

fn dead_letter_reason(verdict: Verdict) -> String {
    match verdict {
        Verdict::DeadLetter(reason) => reason,
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

#[test]
fn a_plugin_that_imports_http_is_refused_by_a_stage_that_does_not_grant_it() {
    let test = TestRuntime::new();
    let error = load(&test, "http://127.0.0.1:1/lookup", "").expect_err("not granted");
    assert!(error.contains("imports `wasi:http/outgoing-handler@"), "{error}");
    assert!(error.contains("add [plugin.capabilities.http]"), "{error}");
}

#[test]
fn a_granted_request_reaches_the_service_and_its_answer_is_the_output() {
    let test = TestRuntime::new();
    let service = LookupService::start();
    let plugin = load(&test, &service.lookup_url(), &granted(&service)).expect("granted");

    assert_eq!(
        output_text(lookup(&plugin, "hello")),
        r#"{"id":"hello","lookup":{"name":"hello","length":5}}"#
    );
    let requests = service.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/lookup/hello");
    assert!(requests[0].body.is_empty());
    assert_eq!(requests[0].header("host"), Some(service.address.to_string().as_str()));
    let origin = service.origin();
    assert_eq!(
        counted("sluice_plugin_http_response_bytes_total", &origin).as_deref(),
        Some("27"),
        "the answer's {} bytes",
        r#"{"name":"hello","length":5}"#.len()
    );
    assert_eq!(
        counted_outcome("sluice_plugin_http_requests_total", &origin, "2xx").as_deref(),
        Some("1")
    );
}

/// The value of counter `name` for granted origin `origin`, as `/metrics`
/// shows it (each test's service has a port, so an origin, of its own).
fn counted(name: &str, origin: &str) -> Option<String> {
    metric_value(name, &[format!("origin=\"{origin}\"")])
}

/// The same, for the series with this `outcome` label too.
fn counted_outcome(name: &str, origin: &str, outcome: &str) -> Option<String> {
    metric_value(
        name,
        &[format!("origin=\"{origin}\""), format!("outcome=\"{outcome}\"")],
    )
}

/// The value of the first series of `name` whose labels include each of
/// `labels` (`key="value"`), read off the test process's recorder.
fn metric_value(name: &str, labels: &[String]) -> Option<String> {
    let rendered = sluice::observe::metrics::prometheus().expect("recorder").render();
    let line = rendered.lines().find(|line| {
        line.starts_with(&format!("{name}{{")) && labels.iter().all(|label| line.contains(label.as_str()))
    })?;
    line.rsplit(' ').next().map(str::to_owned)
}

#[test]
fn the_service_answer_drives_the_verdict() {
    let test = TestRuntime::new();
    let service = LookupService::start();
    let plugin = load(&test, &service.lookup_url(), &granted(&service)).expect("granted");

    for status in ["429", "503"] {
        let Verdict::Retry(retry) = lookup(&plugin, &format!("status:{status}")) else {
            panic!("{status} is worth a retry");
        };
        assert_eq!(retry.delay_ms, Some(2_000), "after the server's Retry-After");
    }
    let Verdict::Retry(retry) = lookup(&plugin, "status:500") else {
        panic!("500 is worth a retry");
    };
    assert_eq!(retry.delay_ms, None, "no Retry-After: the stage's backoff");
    assert_eq!(
        dead_letter_reason(lookup(&plugin, "status:404")),
        r#"lookup of id "status:404" found nothing (404 Not Found)"#
    );
    assert_eq!(
        dead_letter_reason(lookup(&plugin, "status:410")),
        r#"lookup of id "status:410" answered 410 Gone"#
    );
    let Verdict::Retry(retry) = lookup(&plugin, "hang-up") else {
        panic!("a connection closed without an answer is worth a retry");
    };
    assert!(retry.reason.starts_with("lookup failed: "), "{}", retry.reason);
}

#[test]
fn a_loopback_address_is_refused_unless_granted_and_nothing_is_sent() {
    let test = TestRuntime::new();
    let service = LookupService::start();
    let grant = format!("[http]\nallowed_origins = [\"{}\"]\n", service.origin());
    let plugin = load(&test, &service.lookup_url(), &grant).expect("granted origin");

    let reason = dead_letter_reason(lookup(&plugin, "hello"));
    assert!(reason.contains("DestinationIpProhibited"), "{reason}");
    assert!(service.requests().is_empty());
}

#[test]
fn an_origin_or_method_outside_the_grant_is_denied_inside_the_plugin() {
    let test = TestRuntime::new();
    let service = LookupService::start();
    let other_port = format!(
        "[http]\nallowed_origins = [\"http://127.0.0.1:{}\"]\nallowed_addresses = [\"127.0.0.1\"]\n",
        service.address.port() + 1
    );
    let plugin = load(&test, &service.lookup_url(), &other_port).expect("granted");
    assert!(dead_letter_reason(lookup(&plugin, "hello")).contains("HttpRequestDenied"));

    let post_only = format!("{}allowed_methods = [\"POST\"]\n", granted(&service));
    let plugin = load(&test, &service.lookup_url(), &post_only).expect("granted");
    assert!(dead_letter_reason(lookup(&plugin, "hello")).contains("HttpRequestDenied"));
    assert!(service.requests().is_empty());
}

#[test]
fn a_response_over_the_cap_is_refused() {
    let test = TestRuntime::new();
    let service = LookupService::start();
    let capped = format!("{}max_response_bytes = 1000\n", granted(&service));
    let plugin = load(&test, &service.lookup_url(), &capped).expect("granted");

    assert!(dead_letter_reason(lookup(&plugin, "big")).contains("HttpResponseBodySize"));
    assert!(
        matches!(lookup(&plugin, "small"), Verdict::Success(_)),
        "the instance still works"
    );
}

#[test]
fn a_slow_service_times_out_at_the_granted_timeout() {
    let test = TestRuntime::new();
    let service = LookupService::start();
    let short = format!("{}timeout_ms = 300\n", granted(&service));
    let plugin = load(&test, &service.lookup_url(), &short).expect("granted");

    let started = Instant::now();
    let verdict = lookup(&plugin, "slow");
    let took = started.elapsed();
    let Verdict::Retry(retry) = verdict else {
        panic!("a timeout is worth a retry, got {verdict:?}");
    };
    assert!(retry.reason.contains("HttpResponseTimeout"), "{}", retry.reason);
    assert!(
        took < Duration::from_millis(1_500),
        "took {took:?} for a 300 ms timeout"
    );
}

/// A TLS service and a grant that sends it `authorization: Bearer s3cr3t`
/// from a secret file (kept in the returned folder).
fn service_with_secret() -> (tempfile::TempDir, LookupService, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let certificate = tls::self_signed(dir.path(), "lookup", -1, 30);
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cr3t\n").expect("secret file");
    let service = LookupService::start_tls(&certificate);
    let grant = format!(
        "{}ca_file = {:?}\n[[http.secret_headers]]\norigin = \"{}\"\nheader = \"authorization\"\nsecret = \"token\"\nprefix = \"Bearer \"\n[secrets]\ntoken = {{ file = {:?} }}\n",
        granted(&service),
        certificate.certificate,
        service.origin(),
        secret,
    );
    (dir, service, grant)
}

#[test]
fn a_secret_header_is_added_by_the_host_over_tls() {
    let (_dir, service, grant) = service_with_secret();
    let test = TestRuntime::new();
    let plugin = load(&test, &service.lookup_url(), &grant).expect("granted");

    assert_eq!(
        output_text(lookup(&plugin, "hello")),
        r#"{"id":"hello","lookup":{"name":"hello","length":5}}"#,
        "answered over TLS"
    );
    let requests = service.requests();
    assert_eq!(requests[0].header("authorization"), Some("Bearer s3cr3t"));
}

#[test]
fn an_untrusted_certificate_fails_the_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certificate = tls::self_signed(dir.path(), "lookup", -1, 30);
    let test = TestRuntime::new();
    let service = LookupService::start_tls(&certificate);
    let plugin = load(&test, &service.lookup_url(), &granted(&service)).expect("granted");

    let Verdict::Retry(retry) = lookup(&plugin, "hello") else {
        panic!("an untrusted server is not answered");
    };
    assert!(retry.reason.contains("TlsCertificateError"), "{}", retry.reason);
    assert!(service.requests().is_empty());
}

#[test]
fn the_message_trace_continues_on_the_request() {
    let test = TestRuntime::new();
    let service = LookupService::start();
    let plugin = load(&test, &service.lookup_url(), &granted(&service)).expect("granted");
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut message = text_message(7, r#"{"id":"traced"}"#);
    message.headers.push(Header {
        name: "traceparent".to_owned(),
        value: incoming.as_bytes().to_vec(),
    });

    let verdict = plugin.worker().handle_blocking(&message).expect("call");
    assert!(matches!(verdict, Verdict::Success(_)), "{verdict:?}");
    let requests = service.requests();
    let sent = requests[0].header("traceparent").expect("a traceparent on the request");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "same trace");
    assert_ne!(parts[2], "b7ad6b7169203331", "a span of its own");
    assert_eq!(parts[3], "01", "sampling kept");
}

/// The messages every language is given, each with the output or the
/// dead-letter reason it must give, byte for byte the same in all three.
const SAME_IN_EVERY_LANGUAGE: [(&str, Result<&str, &str>); 8] = [
    (
        r#"{"id":"hello","n":1}"#,
        Ok(r#"{"id":"hello","n":1,"lookup":{"name":"hello","length":5}}"#),
    ),
    // A number as written, and a segment with characters to encode.
    (
        r#"{"id":42.50}"#,
        Ok(r#"{"id":42.50,"lookup":{"name":"42.50","length":5}}"#),
    ),
    (
        r#"{"city":"x","id":"Zürich & co/1"}"#,
        Ok(r#"{"city":"x","id":"Zürich & co/1","lookup":{"name":"Zürich & co/1","length":13}}"#),
    ),
    (
        r#"{"id":"status:404"}"#,
        Err(r#"lookup of id "status:404" found nothing (404 Not Found)"#),
    ),
    (
        r#"{"id":"not-json"}"#,
        Err(r#"lookup of id "not-json" answered 200 OK with a body that is not JSON"#),
    ),
    (r#"{"name":"no id"}"#, Err("enrich-http: field `id` is missing")),
    (
        r#"{"id":[1]}"#,
        Err("enrich-http: field `id` must be a string or a number to look up, got [1]"),
    ),
    ("[1,2]", Err("invalid JSON: expected an object, got an array")),
];

#[test]
fn every_language_turns_the_same_answers_into_the_same_verdicts() {
    let service = LookupService::start();
    for language in Language::ALL {
        let test = TestRuntime::new();
        let plugin = load_file(
            &test,
            &language.plugin("enrich-http"),
            &service.lookup_url(),
            &granted(&service),
        )
        .unwrap_or_else(|error| panic!("{language:?}: {error}"));
        for (value, expected) in SAME_IN_EVERY_LANGUAGE {
            let verdict = handle(&plugin, value);
            match expected {
                Ok(output) => assert_eq!(output_text(verdict), output, "{language:?}: {value}"),
                Err(reason) => assert_eq!(dead_letter_reason(verdict), reason, "{language:?}: {value}"),
            }
        }
        let Verdict::Retry(retry) = lookup(&plugin, "status:429") else {
            panic!("{language:?}: 429 is worth a retry");
        };
        assert_eq!(
            retry.reason, r#"lookup of id "status:429" answered 429 Too Many Requests"#,
            "{language:?}"
        );
        assert_eq!(
            retry.delay_ms,
            Some(2_000),
            "{language:?}: after the server's Retry-After"
        );
        let Verdict::Retry(retry) = lookup(&plugin, "status:500") else {
            panic!("{language:?}: 500 is worth a retry");
        };
        assert_eq!(retry.delay_ms, None, "{language:?}");

        // Without the grant, the plugin is refused at load.
        let error =
            load_file(&test, &language.plugin("enrich-http"), &service.lookup_url(), "").expect_err("not granted");
        assert!(
            error.contains("imports `wasi:http/outgoing-handler@"),
            "{language:?}: {error}"
        );
    }
    let paths: Vec<String> = service.requests().into_iter().map(|request| request.path).collect();
    let one_language = [
        "/lookup/hello",
        "/lookup/42.50",
        "/lookup/Z%C3%BCrich%20%26%20co%2F1",
        "/lookup/status%3A404",
        "/lookup/not-json",
        "/lookup/status%3A429",
        "/lookup/status%3A500",
    ];
    assert_eq!(
        paths,
        one_language.repeat(3),
        "one request per message that has an id, the same path in every language"
    );
}

#[test]
fn a_denied_request_never_reaches_the_service_in_any_language() {
    let service = LookupService::start();
    // The origin is granted, its loopback address is not.
    let grant = format!("[http]\nallowed_origins = [\"{}\"]\n", service.origin());
    for language in Language::ALL {
        let test = TestRuntime::new();
        let plugin = load_file(&test, &language.plugin("enrich-http"), &service.lookup_url(), &grant)
            .unwrap_or_else(|error| panic!("{language:?}: {error}"));
        let verdict = lookup(&plugin, "hello");
        assert!(
            !matches!(verdict, Verdict::Success(_)),
            "{language:?}: a refused request cannot succeed: {verdict:?}"
        );
    }
    assert!(service.requests().is_empty(), "no language's request went out");
}

#[test]
fn the_webhook_sends_one_idempotency_key_per_message_in_every_language() {
    let service = LookupService::start();
    let mut expected_keys = Vec::new();
    for language in Language::ALL {
        let test = TestRuntime::new();
        let config = [
            ("webhook-url", service.lookup_url()),
            ("idempotency-header", "event-id".to_owned()),
        ];
        let config: Vec<(&str, &str)> = config.iter().map(|(key, value)| (*key, value.as_str())).collect();
        let plugin = load_configured(&test, &language.plugin("webhook"), &config, &granted(&service))
            .unwrap_or_else(|error| panic!("{language:?}: {error}"));
        let mut worker = plugin.worker();

        let message = text_message(7, "order shipped");
        let Verdict::Success(outputs) = worker.handle_blocking(&message).expect("call") else {
            panic!("{language:?}: a 2xx is success");
        };
        assert_eq!(
            outputs[0].value.as_deref(),
            Some(&b"order shipped"[..]),
            "{language:?}: passed through"
        );
        // Handled again, as after a crash: the same key.
        assert!(matches!(
            worker.handle_blocking(&message).expect("call"),
            Verdict::Success(_)
        ));
        let with_id = Message {
            headers: vec![Header::new("event-id", "evt-42")],
            ..text_message(8, "order paid")
        };
        assert!(matches!(
            worker.handle_blocking(&with_id).expect("call"),
            Verdict::Success(_)
        ));
        let Verdict::Retry(retry) = worker.handle_blocking(&text_message(9, "status:503")).expect("call") else {
            panic!("{language:?}: 503 is worth a retry");
        };
        assert_eq!(retry.reason, "webhook answered 503 Service Unavailable", "{language:?}");
        assert_eq!(retry.delay_ms, Some(2_000), "{language:?}");
        assert_eq!(
            dead_letter_reason(worker.handle_blocking(&text_message(10, "status:404")).expect("call")),
            "webhook answered 404 Not Found",
            "{language:?}"
        );
        expected_keys.extend(["input/0/7", "input/0/7", "evt-42", "input/0/9", "input/0/10"]);
    }
    let keys: Vec<String> = service
        .requests()
        .iter()
        .map(|request| request.header("idempotency-key").unwrap_or("<none>").to_owned())
        .collect();
    assert_eq!(keys, expected_keys);
    // Each language POSTs 13 + 13 + 10 + 10 + 10 body bytes.
    assert_eq!(
        counted("sluice_plugin_http_request_bytes_total", &service.origin()).as_deref(),
        Some("168"),
        "request body bytes counted by origin"
    );
}

#[test]
fn a_service_that_answers_and_closes_before_the_body_is_finished_gives_its_answer() {
    let test = TestRuntime::new();
    let service = LookupService::start();
    let authority = service.address.to_string();
    let plugin = load_configured(
        &test,
        &rust_plugin("early-answer"),
        &[("authority", &authority), ("path", "/upload/early")],
        &granted(&service),
    )
    .expect("granted");

    // The plugin waits for the answer, then writes and finishes its body,
    // which nobody reads any more: that is not an error it sees.
    assert_eq!(
        output_text(handle(&plugin, "written after the answer")),
        "answer: status 400, body \"answered before the body\"; body written: Ok(()); body finished: Ok(())"
    );
    assert_eq!(service.requests().len(), 1);
}

#[test]
fn the_plugin_cannot_read_the_secret_the_host_adds_by_any_way_it_has() {
    let (_dir, service, grant) = service_with_secret();
    let test = TestRuntime::new();
    let plugin = load_configured(
        &test,
        &rust_plugin("secret-probe"),
        &[("url", &service.lookup_url())],
        &grant,
    )
    .expect("granted");

    let found = output_text(handle(&plugin, "hello"));
    assert!(!found.contains("s3cr3t"), "the secret leaked into the plugin:\n{found}");
    assert!(found.contains("environment: []"), "{found}");
    assert!(
        found.contains("own authorization header: Err("),
        "setting the secret's header is refused:\n{found}"
    );
    assert!(found.contains("response body: looked-up:hello"), "{found}");
    let authorizations: Vec<Option<String>> = service
        .requests()
        .iter()
        .map(|request| request.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(
        authorizations,
        [Some("Bearer s3cr3t".to_owned())],
        "one request went out, with the host's header and not the plugin's"
    );
}

#[test]
fn a_granted_name_that_resolves_to_loopback_is_refused_counted_and_never_connected() {
    let service = LookupService::start();
    let test = TestRuntime::new();
    // `localhost` looks like any granted name, but resolves to 127.0.0.1,
    // which the grant does not list.
    let origin = format!("http://localhost:{}", service.address.port());
    let grant = format!("[http]\nallowed_origins = [\"{origin}\"]\n");
    let plugin = load(&test, &format!("{origin}/lookup"), &grant).expect("granted");

    let reason = dead_letter_reason(lookup(&plugin, "hello"));
    assert!(reason.contains("DestinationIpProhibited"), "{reason}");
    assert!(service.requests().is_empty(), "no connection was made");
    assert_eq!(
        counted_outcome("sluice_plugin_http_requests_total", &origin, "refused").as_deref(),
        Some("1"),
        "the refusal is counted"
    );
}
