//! `[plugin.capabilities]` as the stage file writes it, and the checks
//! that turn it into a grant the host enforces.
//!
//! Nothing is granted by default. The settings here carry names only
//! (of secrets, of environment variables, of files); secret values are
//! read when a plugin version is loaded, so a rotated secret file reaches
//! the next version, and never enter the config that `Debug` or logs see.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use serde::Deserialize;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::address_policy::AddressPolicy;
use super::http_grant::{HttpGrant, SecretHeader};
use super::keyvalue::{KeyValueGrant, KeyValueGrantSettings};
use super::origin::{OriginPattern, Scheme};

/// What a stage lets its plugin reach beyond its own memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityGrants {
    /// Outbound HTTP (`wasi:http/outgoing-handler`); absent: none.
    pub http: Option<HttpGrantSettings>,
    /// Key-value buckets (`wasi:keyvalue`); absent: none.
    pub keyvalue: Option<KeyValueGrantSettings>,
    /// Named secrets the host may add to requests; the plugin never reads
    /// them.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
}

/// `[plugin.capabilities.http]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrantSettings {
    /// `scheme://host[:port]`; `*.example.com` for its subdomains, `:*`
    /// for any port.
    #[serde(deserialize_with = "crate::config::string_or_list")]
    pub allowed_origins: Vec<String>,
    #[serde(default = "default_methods", deserialize_with = "crate::config::string_or_list")]
    pub allowed_methods: Vec<String>,
    /// Internal addresses (loopback, private, link-local...) a granted name
    /// may resolve to: addresses or CIDR networks.
    #[serde(default, deserialize_with = "crate::config::string_or_list")]
    pub allowed_addresses: Vec<String>,
    /// The whole exchange, connection to last body byte; the plugin cannot
    /// extend it. Default: three quarters of the call deadline, so the
    /// plugin has time left to act on a timeout.
    pub timeout_ms: Option<u64>,
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Requests one plugin instance may have open at once.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: u32,
    #[serde(default)]
    pub secret_headers: Vec<SecretHeaderSettings>,
    /// PEM certificates trusted for https besides the Mozilla roots (a
    /// company's own CA).
    pub ca_file: Option<PathBuf>,
}

/// One `[[plugin.capabilities.http.secret_headers]]`: a header the host sets
/// on every request to `origin`, from a named secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretHeaderSettings {
    pub origin: String,
    /// The header name, e.g. `authorization`.
    pub header: String,
    /// A name under `[plugin.capabilities.secrets]`.
    pub secret: String,
    /// Written before the secret, e.g. `Bearer `.
    #[serde(default)]
    pub prefix: String,
}

/// Where a secret's value comes from: `{ env = "NAME" }` or
/// `{ file = "/run/secrets/name" }` (one trailing newline is dropped).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(str::to_owned).to_vec()
}

fn default_max_response_bytes() -> u64 {
    1024 * 1024
}

fn default_max_concurrent_requests() -> u32 {
    4
}

/// A grant that cannot work: the stage key at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct GrantError {
    pub key: String,
    pub reason: String,
}

fn grant_error(key: impl Into<String>, reason: impl Into<String>) -> GrantError {
    GrantError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Responses larger than this are refused by the config check: the body is
/// buffered in the plugin's memory, which is at most 4 GiB.
const MAX_RESPONSE_BYTES_CAP: u64 = 1 << 30;

impl CapabilityGrants {
    /// Check every key without reading a secret's value: what `sluice
    /// check` and startup report before anything runs. `deadline_ms` is the
    /// plugin's call deadline, which a request inside the call cannot
    /// outlive.
    pub fn validate(&self, deadline_ms: u64) -> Result<(), GrantError> {
        for (name, source) in &self.secrets {
            let key = format!("plugin.capabilities.secrets.{name}");
            match (&source.env, &source.file) {
                (Some(_), Some(_)) => return Err(grant_error(key, "give `env` or `file`, not both")),
                (None, None) => {
                    return Err(grant_error(
                        key,
                        "say where the value comes from: `env = \"NAME\"` or `file = \"/path\"`",
                    ));
                }
                _ => {}
            }
        }
        if let Some(keyvalue) = &self.keyvalue {
            keyvalue.validate(deadline_ms)?;
        }
        let Some(http) = &self.http else {
            return Ok(());
        };
        self.http_grant(http, deadline_ms, |_, _| Ok(HeaderValue::from_static("checked")))
            .map(drop)
    }

    /// The enforced key-value grant, over the process's backend for it;
    /// `None` when the stage grants no key-value store.
    pub fn resolve_keyvalue(&self, deadline_ms: u64) -> Result<Option<KeyValueGrant>, GrantError> {
        self.keyvalue
            .as_ref()
            .map(|keyvalue| keyvalue.resolve(deadline_ms))
            .transpose()
    }

    /// The enforced HTTP grant, with secret values read now; `None` when
    /// the stage grants no HTTP.
    pub fn resolve_http(&self, deadline_ms: u64) -> Result<Option<HttpGrant>, GrantError> {
        let Some(http) = &self.http else {
            return Ok(None);
        };
        self.http_grant(http, deadline_ms, |name, prefix| self.secret_value(name, prefix))
            .map(Some)
    }

    fn http_grant(
        &self,
        http: &HttpGrantSettings,
        deadline_ms: u64,
        secret: impl Fn(&str, &str) -> Result<HeaderValue, GrantError>,
    ) -> Result<HttpGrant, GrantError> {
        let key = |leaf: &str| format!("plugin.capabilities.http.{leaf}");
        if http.allowed_origins.is_empty() {
            return Err(grant_error(
                key("allowed_origins"),
                "grants nothing: list the origins the plugin may call",
            ));
        }
        let origins = http
            .allowed_origins
            .iter()
            .map(|text| text.parse::<OriginPattern>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| grant_error(key("allowed_origins"), reason))?;
        let methods = http
            .allowed_methods
            .iter()
            .map(|text| {
                Method::from_bytes(text.to_ascii_uppercase().as_bytes())
                    .map_err(|_| grant_error(key("allowed_methods"), format!("`{text}` is not an HTTP method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let addresses = http
            .allowed_addresses
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        grant_error(
                            key("allowed_addresses"),
                            format!("`{text}` is not an address or network"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout_ms = http.timeout_ms.unwrap_or((deadline_ms * 3 / 4).max(1));
        if !(1..=deadline_ms).contains(&timeout_ms) {
            return Err(grant_error(
                key("timeout_ms"),
                format!(
                    "must be between 1 and {deadline_ms}, got {timeout_ms} (at most plugin.limits.deadline_ms: a request cannot outlive the call that makes it)"
                ),
            ));
        }
        if !(1..=MAX_RESPONSE_BYTES_CAP).contains(&http.max_response_bytes) {
            return Err(grant_error(
                key("max_response_bytes"),
                format!(
                    "must be between 1 and {MAX_RESPONSE_BYTES_CAP}, got {}",
                    http.max_response_bytes
                ),
            ));
        }
        if !(1..=1024).contains(&http.max_concurrent_requests) {
            return Err(grant_error(
                key("max_concurrent_requests"),
                format!("must be between 1 and 1024, got {}", http.max_concurrent_requests),
            ));
        }
        let mut secret_headers = Vec::with_capacity(http.secret_headers.len());
        for (index, header) in http.secret_headers.iter().enumerate() {
            let key = |leaf: &str| format!("plugin.capabilities.http.secret_headers[{index}].{leaf}");
            let origin: OriginPattern = header
                .origin
                .parse()
                .map_err(|reason| grant_error(key("origin"), reason))?;
            if origin.scheme() != Scheme::Https {
                return Err(grant_error(key("origin"), "a secret is only sent over https"));
            }
            if !origins.iter().any(|allowed| allowed.covers(&origin)) {
                return Err(grant_error(
                    key("origin"),
                    format!("`{origin}` is not within plugin.capabilities.http.allowed_origins"),
                ));
            }
            let name = HeaderName::from_bytes(header.header.as_bytes())
                .map_err(|_| grant_error(key("header"), format!("`{}` is not a header name", header.header)))?;
            if !self.secrets.contains_key(&header.secret) {
                return Err(grant_error(
                    key("secret"),
                    format!("no secret `{}` under plugin.capabilities.secrets", header.secret),
                ));
            }
            let value = secret(&header.secret, &header.prefix)?;
            secret_headers.push(SecretHeader { origin, name, value });
        }
        let tls = tls_config(http.ca_file.as_deref()).map_err(|reason| grant_error(key("ca_file"), reason))?;
        Ok(HttpGrant {
            tls,
            origins,
            methods,
            addresses: AddressPolicy::new(addresses),
            timeout: Duration::from_millis(timeout_ms),
            max_response_bytes: http.max_response_bytes,
            max_concurrent_requests: http.max_concurrent_requests as usize,
            secret_headers,
        })
    }

    /// `prefix` and the named secret's value, as a header value marked
    /// sensitive (left out of hyper's debug output).
    fn secret_value(&self, name: &str, prefix: &str) -> Result<HeaderValue, GrantError> {
        let key = format!("plugin.capabilities.secrets.{name}");
        let source = self
            .secrets
            .get(name)
            .ok_or_else(|| grant_error(key.clone(), "no such secret"))?;
        let value = match (&source.env, &source.file) {
            (Some(variable), _) => std::env::var(variable).map_err(|_| {
                grant_error(
                    key.clone(),
                    format!("the environment variable {variable} is not set (or not UTF-8)"),
                )
            })?,
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|error| grant_error(key.clone(), format!("cannot read {}: {error}", file.display())))?;
                text.strip_suffix('\n')
                    .map(|line| line.strip_suffix('\r').unwrap_or(line))
                    .unwrap_or(&text)
                    .to_owned()
            }
            (None, None) => return Err(grant_error(key, "has no source")),
        };
        if value.is_empty() {
            return Err(grant_error(key, "is empty"));
        }
        let mut header = HeaderValue::from_str(&format!("{prefix}{value}"))
            .map_err(|_| grant_error(key, "holds characters a header value cannot carry"))?;
        header.set_sensitive(true);
        Ok(header)
    }
}

/// The TLS client settings of a grant: the Mozilla roots (webpki-roots),
/// plus the certificates in `ca_file`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(file) = ca_file {
        let pem = std::fs::read(file).map_err(|error| format!("cannot read {}: {error}", file.display()))?;
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let certificate =
                certificate.map_err(|error| format!("{}: not PEM certificates: {error}", file.display()))?;
            roots
                .add(certificate)
                .map_err(|error| format!("{}: {error}", file.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{} holds no certificate", file.display()));
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(toml_text: &str) -> CapabilityGrants {
        toml::from_str(toml_text).expect("valid TOML")
    }

    fn error(toml_text: &str) -> GrantError {
        grants(toml_text).validate(10_000).expect_err("invalid grant")
    }

    #[test]
    fn the_default_timeout_leaves_the_plugin_a_quarter_of_its_deadline() {
        let grants = grants("[http]\nallowed_origins = \"https://api.example.com\"");
        let grant = grants.resolve_http(1000).expect("valid").expect("granted");
        assert_eq!(grant.timeout(), Duration::from_millis(750));
    }

    #[test]
    fn no_table_grants_nothing() {
        let none = CapabilityGrants::default();
        assert!(matches!(none.resolve_http(1000), Ok(None)));
    }

    #[test]
    fn each_bad_key_is_named_with_the_reason() {
        let cases = [
            (
                "[http]\nallowed_origins = []",
                "plugin.capabilities.http.allowed_origins",
                "grants nothing",
            ),
            (
                "[http]\nallowed_origins = [\"example.com\"]",
                "plugin.capabilities.http.allowed_origins",
                "no scheme",
            ),
            (
                "[http]\nallowed_origins = \"https://a.example.com\"\nallowed_methods = \"GET, NOT A METHOD\"",
                "plugin.capabilities.http.allowed_methods",
                "not an HTTP method",
            ),
            (
                "[http]\nallowed_origins = \"https://a.example.com\"\nallowed_addresses = [\"10.0.0.0/33\"]",
                "plugin.capabilities.http.allowed_addresses",
                "not an address",
            ),
            (
                "[http]\nallowed_origins = \"https://a.example.com\"\ntimeout_ms = 20000",
                "plugin.capabilities.http.timeout_ms",
                "cannot outlive the call",
            ),
            (
                "[http]\nallowed_origins = \"https://a.example.com\"\nmax_concurrent_requests = 0",
                "plugin.capabilities.http.max_concurrent_requests",
                "between 1 and 1024",
            ),
            (
                "[http]\nallowed_origins = \"https://a.example.com\"\n[[http.secret_headers]]\norigin = \"https://b.example.com\"\nheader = \"authorization\"\nsecret = \"token\"\n[secrets]\ntoken = { env = \"T\" }",
                "plugin.capabilities.http.secret_headers[0].origin",
                "not within",
            ),
            (
                "[http]\nallowed_origins = \"http://a.example.com\"\n[[http.secret_headers]]\norigin = \"http://a.example.com\"\nheader = \"authorization\"\nsecret = \"token\"\n[secrets]\ntoken = { env = \"T\" }",
                "plugin.capabilities.http.secret_headers[0].origin",
                "only sent over https",
            ),
            (
                "[http]\nallowed_origins = \"https://a.example.com\"\n[[http.secret_headers]]\norigin = \"https://a.example.com\"\nheader = \"authorization\"\nsecret = \"missing\"",
                "plugin.capabilities.http.secret_headers[0].secret",
                "no secret `missing`",
            ),
            (
                "[secrets]\ntoken = {}",
                "plugin.capabilities.secrets.token",
                "where the value comes from",
            ),
        ];
        for (text, key, reason) in cases {
            let error = error(text);
            assert_eq!(error.key, key, "{text}");
            assert!(error.reason.contains(reason), "{text}: {}", error.reason);
        }
    }

    #[test]
    fn a_secret_is_read_from_its_file_when_resolved_and_marked_sensitive() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), "s3cr3t\n").expect("write secret");
        let text = format!(
            "[http]\nallowed_origins = \"https://*.example.com\"\n[[http.secret_headers]]\norigin = \"https://api.example.com\"\nheader = \"Authorization\"\nsecret = \"token\"\nprefix = \"Bearer \"\n[secrets]\ntoken = {{ file = {:?} }}",
            file.path()
        );
        let grant = grants(&text).resolve_http(10_000).expect("valid").expect("granted");
        let [header] = grant.secret_headers.as_slice() else {
            panic!("one secret header");
        };
        assert_eq!(header.name, "authorization");
        assert_eq!(header.value, "Bearer s3cr3t");
        assert!(header.value.is_sensitive());
        assert!(!format!("{grant:?}").contains("s3cr3t"), "Debug never shows a secret");
    }

    #[test]
    fn a_missing_secret_is_an_error_at_resolution_not_at_validation() {
        let text = "[http]\nallowed_origins = \"https://api.example.com\"\n[[http.secret_headers]]\norigin = \"https://api.example.com\"\nheader = \"authorization\"\nsecret = \"token\"\n[secrets]\ntoken = { env = \"SLUICE_TEST_SECRET_THAT_IS_NOT_SET\" }";
        let grants = grants(text);
        assert_eq!(grants.validate(10_000), Ok(()));
        let error = grants.resolve_http(10_000).expect_err("unset variable");
        assert_eq!(error.key, "plugin.capabilities.secrets.token");
        assert!(
            error.reason.contains("SLUICE_TEST_SECRET_THAT_IS_NOT_SET"),
            "{}",
            error.reason
        );
    }
}
