//! The HTTP grant as the host enforces it: what may go out, where to, for
//! how long, and which secret headers the host adds on the way.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tokio_rustls::rustls::ClientConfig;

use super::address_policy::AddressPolicy;
use super::origin::{Origin, OriginPattern};

/// A stage's `[plugin.capabilities.http]`, checked and with its secrets
/// read; shared by every instance of a plugin version.
pub struct HttpGrant {
    /// Trust roots for https; built once per plugin version.
    pub(super) tls: Arc<ClientConfig>,
    pub(super) origins: Vec<OriginPattern>,
    pub(super) methods: Vec<Method>,
    pub(super) addresses: AddressPolicy,
    /// For the whole exchange; the plugin's own timeouts can only shorten it.
    pub(super) timeout: Duration,
    pub(super) max_response_bytes: u64,
    pub(super) max_concurrent_requests: usize,
    pub(super) secret_headers: Vec<SecretHeader>,
}

/// A header the host sets on requests to `origin`. Its value is marked
/// sensitive, so `Debug` shows `Sensitive` instead of the secret.
#[derive(Debug)]
pub struct SecretHeader {
    pub(super) origin: OriginPattern,
    pub(super) name: HeaderName,
    pub(super) value: HeaderValue,
}

/// Why a request was refused before it left the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Method(Method),
    Origin(String),
}

impl fmt::Display for Denial {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Method(method) => {
                write!(
                    formatter,
                    "method {method} is not in plugin.capabilities.http.allowed_methods"
                )
            }
            Denial::Origin(origin) => {
                write!(formatter, "{origin} is not in plugin.capabilities.http.allowed_origins")
            }
        }
    }
}

impl HttpGrant {
    /// May a request with this method go to this origin? The pattern that
    /// lets it, which names it in metrics (a bounded set, unlike hosts).
    pub fn decide(&self, method: &Method, origin: &Origin) -> Result<&OriginPattern, Denial> {
        if !self.methods.contains(method) {
            return Err(Denial::Method(method.clone()));
        }
        self.origins
            .iter()
            .find(|pattern| pattern.matches(origin))
            .ok_or_else(|| Denial::Origin(origin.to_string()))
    }

    /// The headers the host adds to a request to `origin`.
    pub fn secret_headers_for<'a>(
        &'a self,
        origin: &'a Origin,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        self.secret_headers
            .iter()
            .filter(move |header| header.origin.matches(origin))
            .map(|header| (&header.name, &header.value))
    }

    /// Whether the plugin may not set or read this header itself: the
    /// names the host fills from secrets.
    pub fn is_secret_header(&self, name: &HeaderName) -> bool {
        self.secret_headers.iter().any(|header| header.name == name)
    }

    pub fn tls(&self) -> Arc<ClientConfig> {
        self.tls.clone()
    }

    pub fn addresses(&self) -> &AddressPolicy {
        &self.addresses
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes
    }

    pub fn max_concurrent_requests(&self) -> usize {
        self.max_concurrent_requests
    }
}

impl fmt::Debug for HttpGrant {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("HttpGrant")
            .field(
                "origins",
                &self.origins.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .field("methods", &self.methods)
            .field("addresses", &self.addresses)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("secret_headers", &self.secret_headers)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::{CapabilityGrants, Scheme};

    fn grant(toml_text: &str) -> HttpGrant {
        let grants: CapabilityGrants = toml::from_str(toml_text).expect("valid TOML");
        grants.resolve_http(10_000).expect("valid grant").expect("granted")
    }

    #[test]
    fn only_granted_methods_and_origins_pass() {
        let grant = grant("[http]\nallowed_origins = [\"https://api.example.com\", \"http://127.0.0.1:*\"]");
        let api = Origin::of_request(Scheme::Https, "api.example.com").unwrap();
        let local = Origin::of_request(Scheme::Http, "127.0.0.1:8080").unwrap();
        let other = Origin::of_request(Scheme::Https, "other.example.com").unwrap();
        assert_eq!(
            grant.decide(&Method::GET, &api).map(ToString::to_string),
            Ok("https://api.example.com".to_owned())
        );
        assert_eq!(
            grant.decide(&Method::POST, &local).map(ToString::to_string),
            Ok("http://127.0.0.1:*".to_owned())
        );
        assert_eq!(grant.decide(&Method::DELETE, &api), Err(Denial::Method(Method::DELETE)));
        assert_eq!(
            grant.decide(&Method::GET, &other),
            Err(Denial::Origin("https://other.example.com:443".to_owned()))
        );
    }
}
