//! The `wasi:http` hooks of one plugin instance: every request the plugin
//! makes is checked against the stage's grant, sent by the host to an
//! address it checked, bounded in time, size and number, and counted.
//!
//! wasmtime's own sender resolves and connects by name, which would let a
//! granted name that resolves to an internal address through. This one
//! resolves the name, checks each address ([`AddressPolicy`]), and connects
//! to a checked address only. No redirect is followed (the plugin sees a
//! 3xx and decides), so a secret header only ever goes to the origin it was
//! granted for.
//!
//! [`AddressPolicy`]: super::AddressPolicy

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{Either, select};
use http::header::CONTENT_LENGTH;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks,
};

use super::capped_body::CappedBody;
use super::http_grant::HttpGrant;
use super::origin::{Origin, Scheme};
use super::request_body::RequestBody;
use crate::observe::metrics::{
    PLUGIN_HTTP_REQUEST_BYTES, PLUGIN_HTTP_REQUESTS, PLUGIN_HTTP_RESPONSE_BYTES, PLUGIN_HTTP_SECONDS,
};
use crate::observe::{LogThrottle, TRACEPARENT_HEADER, TraceParent};
use tracing::Instrument;

/// How often one instance may log a failed request.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Drives a connection until its response is read.
type ConnectionDriver = std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// What `send_request` hands back to wasmtime: the response and the future
/// that drives its connection.
type Sent = (Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

/// One instance's HTTP hooks. Without a grant every request is denied
/// (a plugin that imports `wasi:http` is refused at load unless its stage
/// grants it, so this is the second line).
pub struct OutboundHttp {
    grant: Option<Arc<HttpGrant>>,
    /// Requests this instance has open, up to the grant's
    /// `max_concurrent_requests`.
    open_requests: Arc<Semaphore>,
    plugin: Arc<str>,
    /// One warning per interval for this instance's failed requests.
    warnings: Arc<Mutex<LogThrottle>>,
    /// The call under way: its deadline and the message it is about.
    call: Arc<CallContext>,
}

/// What a request made during a plugin call is tied to.
#[derive(Debug, Default)]
pub struct CallContext {
    /// When the call must end: no request outlives it, so time spent
    /// waiting on I/O counts against the call's deadline.
    pub deadline: Option<Instant>,
    /// The message the call is about, when it is about one.
    pub message: Option<CallerMessage>,
}

/// The message a call is about: named on each request's span, and its
/// trace continued on the request's `traceparent` header.
#[derive(Debug, Clone)]
pub struct CallerMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The message's own `traceparent`, when it carries one.
    pub trace: Option<TraceParent>,
}

impl OutboundHttp {
    pub fn new(grant: Option<Arc<HttpGrant>>, plugin: Arc<str>) -> Self {
        let permits = grant.as_ref().map_or(0, |grant| grant.max_concurrent_requests());
        OutboundHttp {
            grant,
            open_requests: Arc::new(Semaphore::new(permits)),
            plugin,
            warnings: Arc::new(Mutex::new(LogThrottle::new(WARNING_INTERVAL))),
            call: Arc::default(),
        }
    }

    /// A call into the plugin begins: requests it makes end by `deadline`
    /// and belong to `message` (one message per call for a plugin that calls
    /// out; a batch call has none).
    pub fn begin_call(&mut self, deadline: Instant, message: Option<CallerMessage>) {
        self.call = Arc::new(CallContext {
            deadline: Some(deadline),
            message,
        });
    }
}

impl WasiHttpHooks for OutboundHttp {
    /// The plugin may neither set nor read the headers the host fills from
    /// secrets (nor the hop-by-hop ones wasmtime always forbids).
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        (self.forbidden_header_filter())(name)
    }

    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        let grant = self.grant.clone();
        Arc::new(move |name| {
            DEFAULT_FORBIDDEN_HEADERS.contains(name) || grant.as_ref().is_some_and(|grant| grant.is_secret_header(name))
        })
    }

    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_body_sent: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        let grant = self.grant.clone();
        let open_requests = self.open_requests.clone();
        let plugin = self.plugin.clone();
        let warnings = self.warnings.clone();
        let call = self.call.clone();
        let message = call.message.as_ref();
        let trace = message
            .and_then(|message| message.trace.as_ref())
            .map_or_else(TraceParent::new_root, TraceParent::child);
        let span = tracing::info_span!(
            "outbound_request",
            plugin = &*plugin,
            method = %request.method(),
            uri = %redacted(request.uri()),
            topic = message.map(|message| message.topic.as_str()),
            partition = message.map(|message| message.partition),
            offset = message.map(|message| message.offset),
            trace_id = %trace.trace_id(),
        );
        let mut request = request;
        if let Ok(value) = http::HeaderValue::from_bytes(&trace.to_header_value()) {
            request.headers_mut().insert(TRACEPARENT_HEADER, value);
        }
        Box::new(
            async move {
            let started = std::time::Instant::now();
            let method = request.method().clone();
            let uri = redacted(request.uri());
            match send(grant, open_requests, request, options, call.deadline).await {
                Ok((origin, sent)) => {
                    let status = sent.0.status();
                    tracing::debug!(plugin = &*plugin, %method, %uri, %status, "plugin request answered");
                    count(&origin, &format!("{}xx", status.as_u16() / 100), started);
                    Ok(sent)
                }
                Err(Refused {
                    origin,
                    outcome,
                    reason,
                    error,
                }) => {
                    count(&origin, outcome, started);
                    let allowed = warnings.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).allow();
                    if let Some(held_back) = allowed {
                        tracing::warn!(plugin = &*plugin, %method, %uri, outcome, %reason, held_back, "plugin request refused or failed; the plugin sees an HTTP error");
                    }
                    Err(error)
                }
            }
        }
            .instrument(span),
        )
    }
}

fn count(origin: &str, outcome: &str, started: std::time::Instant) {
    metrics::counter!(PLUGIN_HTTP_REQUESTS, "origin" => origin.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
    metrics::histogram!(PLUGIN_HTTP_SECONDS, "origin" => origin.to_owned()).record(started.elapsed().as_secs_f64());
}

/// The request's URI without its query, which may carry data the log
/// should not.
fn redacted(uri: &Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map_or("?", |authority| authority.as_str()),
        uri.path()
    )
}

/// A request that did not get a response, with what the guest sees and
/// what the metric and log say.
struct Refused {
    /// The grant's pattern it matched, or `denied`.
    origin: String,
    outcome: &'static str,
    reason: String,
    error: Error,
}

fn denied(reason: String) -> Refused {
    Refused {
        origin: "denied".to_owned(),
        outcome: "denied",
        reason,
        error: Error::HttpRequestDenied,
    }
}

async fn send(
    grant: Option<Arc<HttpGrant>>,
    open_requests: Arc<Semaphore>,
    request: Request<WasiBody>,
    options: Option<RequestOptions>,
    call_deadline: Option<Instant>,
) -> Result<(String, Sent), Refused> {
    let (parts, body) = request.into_parts();
    let mut body = RequestBody::new(body);
    let mut request = Request::from_parts(parts, ());
    let Some(grant) = grant else {
        return Err(denied("the stage grants no HTTP (plugin.capabilities.http)".to_owned()));
    };
    let scheme = match request.uri().scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        other => return Err(denied(format!("scheme {other:?} is not http or https"))),
    };
    let authority = request.uri().authority().map(|authority| authority.as_str().to_owned());
    let origin = Origin::of_request(scheme, authority.as_deref().unwrap_or_default()).map_err(denied)?;
    let pattern = grant
        .decide(request.method(), &origin)
        .map_err(|denial| denied(denial.to_string()))?;
    let label = pattern.to_string();
    let failed = |outcome: &'static str, reason: String, error: Error| Refused {
        origin: label.clone(),
        outcome,
        reason,
        error,
    };
    let permit = open_requests.clone().try_acquire_owned().map_err(|_| {
        failed(
            "limited",
            format!(
                "already {} requests open (plugin.capabilities.http.max_concurrent_requests)",
                grant.max_concurrent_requests()
            ),
            Error::ConnectionLimitReached,
        )
    })?;
    let granted = Instant::now() + grant.timeout();
    let deadline = call_deadline.map_or(granted, |call| call.min(granted));
    let shorter = |guest: Option<Duration>| {
        let remaining = deadline.saturating_duration_since(Instant::now());
        guest.map_or(remaining, |guest| guest.min(remaining))
    };
    let connect_by = Instant::now() + shorter(options.and_then(|options| options.connect_timeout));

    let address = resolve(&origin, &grant, connect_by)
        .await
        .map_err(|(reason, error)| failed("refused", reason, error))?;
    let stream = connect(address, &origin, &grant, connect_by)
        .await
        .map_err(|(reason, error)| failed("error", reason, error))?;

    for (name, value) in grant.secret_headers_for(&origin) {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    // On the wire a request names only its path; the origin was the
    // connection's.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    *request.uri_mut() =
        Uri::try_from(path).map_err(|_| failed("error", "bad path".to_owned(), Error::HttpRequestUriInvalid))?;
    body.counted_in(metrics::counter!(PLUGIN_HTTP_REQUEST_BYTES, "origin" => label.clone()));
    let request = request.map(|()| body);

    let first_byte_by = Instant::now() + shorter(options.and_then(|options| options.first_byte_timeout));
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ("the HTTP handshake failed".to_owned(), Error::from(error)))?;
        let response = Box::pin(sender.send_request(request));
        let connection = Box::pin(connection);
        // Drive the connection while the response head is on its way; keep
        // it to drive the body after.
        match select(response, connection).await {
            Either::Left((response, connection)) => response
                .map(|response| {
                    (
                        response,
                        Box::pin(async move { connection.await.map_err(Error::from) }) as ConnectionDriver,
                    )
                })
                .map_err(|error| (format!("the request failed: {error}"), Error::from(error))),
            // The connection failed, but the answer may have come first: a
            // server may answer and close before the request's body is done
            // (hyper then calls the message incomplete). The answer is what
            // the plugin asked for; its body is read as far as it came.
            Either::Right((Err(error), response)) => match response.now_or_never() {
                Some(Ok(response)) => Ok((response, Box::pin(async { Ok(()) }) as ConnectionDriver)),
                _ => Err((format!("the connection failed: {error}"), Error::from(error))),
            },
            // The connection ended (the server answered and closed, say):
            // the response may be waiting already.
            Either::Right((Ok(()), response)) => match response.await {
                Ok(response) => Ok((response, Box::pin(async { Ok(()) }) as ConnectionDriver)),
                Err(error) => Err((format!("the request failed: {error}"), Error::from(error))),
            },
        }
    };
    let (response, connection) = match tokio::time::timeout_at(first_byte_by, exchange).await {
        Ok(Ok(exchanged)) => exchanged,
        Ok(Err((reason, error))) => return Err(failed("error", reason, error)),
        Err(_) => {
            return Err(failed(
                "timeout",
                "no response within the time granted (plugin.capabilities.http.timeout_ms)".to_owned(),
                Error::HttpResponseTimeout,
            ));
        }
    };
    let cap = grant.max_response_bytes();
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > cap) {
        return Err(failed(
            "too_large",
            format!(
                "the response declares {} bytes, more than plugin.capabilities.http.max_response_bytes ({cap})",
                declared.unwrap_or_default()
            ),
            Error::HttpResponseBodySize(Some(cap)),
        ));
    }
    let received = metrics::counter!(PLUGIN_HTTP_RESPONSE_BYTES, "origin" => label.clone());
    let response = response.map(|body| CappedBody::new(body, cap, deadline, permit, received).boxed_unsync());
    let driver = async move {
        // Bounded by the deadline too: a server that trickles keeps no
        // connection open past it.
        match tokio::time::timeout_at(deadline, connection).await {
            Ok(result) => result,
            Err(_) => Err(Error::HttpResponseTimeout),
        }
    };
    Ok((label, (response, Box::new(driver))))
}

/// The first address `origin`'s host resolves to that the grant lets the
/// plugin reach.
async fn resolve(origin: &Origin, grant: &HttpGrant, by: Instant) -> Result<SocketAddr, (String, Error)> {
    let addresses: Vec<SocketAddr> = match origin.host.parse::<IpAddr>() {
        Ok(address) => vec![SocketAddr::new(address, origin.port)],
        Err(_) => match tokio::time::timeout_at(by, tokio::net::lookup_host((origin.host.as_str(), origin.port))).await
        {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(error)) => {
                return Err((
                    format!("cannot resolve {}: {error}", origin.host),
                    Error::DnsError {
                        rcode: Some(error.to_string()),
                        info_code: None,
                    },
                ));
            }
            Err(_) => return Err((format!("resolving {} timed out", origin.host), Error::DnsTimeout)),
        },
    };
    let mut refusal = None;
    for address in &addresses {
        match grant.addresses().check(address.ip()) {
            Ok(()) => return Ok(*address),
            Err(reason) => refusal = refusal.or(Some(reason)),
        }
    }
    Err(match refusal {
        Some(reason) => (format!("{}: {reason}", origin.host), Error::DestinationIpProhibited),
        None => (format!("{} has no address", origin.host), Error::DestinationNotFound),
    })
}

trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// A connection to `address`, over TLS for https with the origin's host
/// name checked against its certificate.
async fn connect(
    address: SocketAddr,
    origin: &Origin,
    grant: &HttpGrant,
    by: Instant,
) -> Result<Box<dyn Connection>, (String, Error)> {
    let timed_out = || (format!("connecting to {address} timed out"), Error::ConnectionTimeout);
    let tcp = tokio::time::timeout_at(by, TcpStream::connect(address))
        .await
        .map_err(|_| timed_out())?
        .map_err(|error| {
            (
                format!("cannot connect to {address}: {error}"),
                Error::ConnectionRefused,
            )
        })?;
    if origin.scheme == Scheme::Http {
        return Ok(Box::new(tcp));
    }
    let name = match origin.host.parse::<IpAddr>() {
        Ok(address) => ServerName::from(address),
        Err(_) => ServerName::try_from(origin.host.clone()).map_err(|_| {
            (
                format!("{} is not a TLS server name", origin.host),
                Error::HttpRequestUriInvalid,
            )
        })?,
    };
    let tls = tokio::time::timeout_at(by, TlsConnector::from(grant.tls()).connect(name, tcp))
        .await
        .map_err(|_| timed_out())?
        .map_err(|error| {
            (
                format!("TLS with {} failed: {error}", origin.host),
                Error::TlsCertificateError,
            )
        })?;
    Ok(Box::new(tls))
}
