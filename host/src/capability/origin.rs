//! Which origins a plugin may call: the patterns a stage grants and the
//! origin of a request, compared without any network lookup.
//!
//! An origin is a scheme, a host and a port, as browsers define it. A
//! pattern may widen the host to its subdomains (`*.example.com`, which
//! does not match `example.com` itself) and the port to any port
//! (`:*`); nothing else is a wildcard, and no pattern matches everything.

use std::fmt;
use std::str::FromStr;

/// The schemes a plugin can use: plain HTTP and HTTP over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The port a URL without one means.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// Where one request goes: what the grant is checked against, and what
/// counters and logs name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: Scheme,
    /// Lowercase; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of a request for `scheme` and `authority` (`host`,
    /// `host:port`, `[v6]:port`). User info in the authority is refused:
    /// credentials are the host's to add, never the plugin's.
    pub fn of_request(scheme: Scheme, authority: &str) -> Result<Self, String> {
        if authority.contains('@') {
            return Err("credentials in the URL are not allowed".to_owned());
        }
        let (host, port) = split_authority(authority)?;
        let port = match port {
            None => scheme.default_port(),
            Some(port) => port.parse().map_err(|_| format!("`{port}` is not a port number"))?,
        };
        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        write!(formatter, "{}://{host}:{}", self.scheme, self.port)
    }
}

/// One entry of a stage's `allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: Scheme,
    host: HostPattern,
    port: PortPattern,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Exact(u16),
    Any,
}

impl OriginPattern {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether every origin `narrower` matches, this matches too: a secret
    /// header's origin must lie within what the stage allows.
    pub fn covers(&self, narrower: &OriginPattern) -> bool {
        let host = match (&self.host, &narrower.host) {
            (HostPattern::Exact(wide), HostPattern::Exact(narrow)) => wide == narrow,
            (HostPattern::Subdomains(parent), HostPattern::Exact(name)) => name
                .strip_suffix(parent.as_str())
                .is_some_and(|label| !label.is_empty()),
            (HostPattern::Subdomains(parent), HostPattern::Subdomains(narrow)) => narrow.ends_with(parent.as_str()),
            (HostPattern::Exact(_), HostPattern::Subdomains(_)) => false,
        };
        let port = match (self.port, narrower.port) {
            (PortPattern::Any, _) => true,
            (PortPattern::Exact(wide), PortPattern::Exact(narrow)) => wide == narrow,
            (PortPattern::Exact(_), PortPattern::Any) => false,
        };
        self.scheme == narrower.scheme && host && port
    }

    pub fn matches(&self, origin: &Origin) -> bool {
        let host = match &self.host {
            HostPattern::Exact(host) => origin.host == *host,
            HostPattern::Subdomains(parent) => origin
                .host
                .strip_suffix(parent.as_str())
                .is_some_and(|label| !label.is_empty()),
        };
        let port = match self.port {
            PortPattern::Exact(port) => origin.port == port,
            PortPattern::Any => true,
        };
        self.scheme == origin.scheme && host && port
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl FromStr for OriginPattern {
    type Err = String;

    /// `scheme://host[:port]`, where host may be `*.parent.domain` and
    /// port may be `*`. Paths, queries and credentials are refused: a grant
    /// is for a whole origin.
    fn from_str(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` has no scheme: write it as https://host[:port]"))?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| format!("`{text}`: the scheme must be http or https"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!("`{text}` is more than an origin: leave out the path"));
        }
        if rest.contains('@') {
            return Err(format!(
                "`{text}` holds credentials: grant a secret header instead (plugin.capabilities.http.secret_headers)"
            ));
        }
        let (host, port) = split_authority(rest).map_err(|reason| format!("`{text}`: {reason}"))?;
        let port = match port {
            None => PortPattern::Exact(scheme.default_port()),
            Some("*") => PortPattern::Any,
            Some(port) => PortPattern::Exact(
                port.parse()
                    .map_err(|_| format!("`{text}`: `{port}` is not a port number or `*`"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(parent) if valid_name(parent) && parent.contains('.') => HostPattern::Subdomains(format!(".{parent}")),
            Some(_) => {
                return Err(format!(
                    "`{text}`: a wildcard host needs a parent domain with at least two labels (*.example.com)"
                ));
            }
            None if host.contains('*') => {
                return Err(format!(
                    "`{text}`: `*` may only stand for the subdomains (*.example.com)"
                ));
            }
            None if valid_name(&host) || host.parse::<std::net::IpAddr>().is_ok() => HostPattern::Exact(host),
            None => return Err(format!("`{text}`: `{host}` is not a host name or address")),
        };
        Ok(OriginPattern {
            scheme,
            host,
            port,
            text: text.to_owned(),
        })
    }
}

/// `host`, `host:port` or `[v6]:port` into the host (without brackets) and
/// the port text.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address is missing its `]`".to_owned())?;
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|port| (host, Some(port)))
                .ok_or_else(|| format!("unexpected `{after}` after the address")),
        };
    }
    if authority.is_empty() {
        return Err("the host is empty".to_owned());
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// A DNS name of letters, digits, hyphens and dots, with no empty label.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> OriginPattern {
        text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn origin(scheme: Scheme, authority: &str) -> Origin {
        Origin::of_request(scheme, authority).expect("a valid authority")
    }

    #[test]
    fn an_exact_origin_matches_only_its_scheme_host_and_port() {
        let grant = pattern("https://api.example.com");
        assert!(grant.matches(&origin(Scheme::Https, "api.example.com")));
        assert!(grant.matches(&origin(Scheme::Https, "API.Example.com:443")));
        assert!(!grant.matches(&origin(Scheme::Http, "api.example.com")));
        assert!(!grant.matches(&origin(Scheme::Https, "api.example.com:8443")));
        assert!(!grant.matches(&origin(Scheme::Https, "evil.api.example.com")));
        assert!(!grant.matches(&origin(Scheme::Https, "api.example.com.evil.net")));
    }

    #[test]
    fn a_subdomain_wildcard_leaves_out_the_parent_and_lookalikes() {
        let grant = pattern("https://*.example.com");
        assert!(grant.matches(&origin(Scheme::Https, "a.example.com")));
        assert!(grant.matches(&origin(Scheme::Https, "a.b.example.com")));
        assert!(!grant.matches(&origin(Scheme::Https, "example.com")));
        assert!(!grant.matches(&origin(Scheme::Https, "badexample.com")));
    }

    #[test]
    fn a_port_wildcard_allows_any_port_of_the_host() {
        let grant = pattern("http://127.0.0.1:*");
        assert!(grant.matches(&origin(Scheme::Http, "127.0.0.1:8080")));
        assert!(grant.matches(&origin(Scheme::Http, "127.0.0.1")));
        assert!(!grant.matches(&origin(Scheme::Https, "127.0.0.1:8080")));
        let v6 = pattern("http://[::1]:9000");
        assert!(v6.matches(&origin(Scheme::Http, "[::1]:9000")));
    }

    #[test]
    fn patterns_that_are_not_a_single_origin_are_refused_with_the_reason() {
        for (text, reason) in [
            ("api.example.com", "no scheme"),
            ("ftp://example.com", "http or https"),
            ("https://example.com/path", "leave out the path"),
            ("https://user:pw@example.com", "secret header"),
            ("https://*", "subdomains"),
            ("https://*.com", "parent domain"),
            ("https://a*.example.com", "subdomains"),
            ("https://example.com:http", "port number"),
            ("https://exa mple.com", "not a host"),
        ] {
            let error = text.parse::<OriginPattern>().expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn a_pattern_covers_only_what_it_matches_entirely() {
        assert!(pattern("https://*.example.com").covers(&pattern("https://api.example.com")));
        assert!(pattern("https://*.example.com").covers(&pattern("https://*.eu.example.com")));
        assert!(pattern("https://api.example.com:*").covers(&pattern("https://api.example.com")));
        assert!(!pattern("https://api.example.com").covers(&pattern("https://*.api.example.com")));
        assert!(!pattern("https://*.example.com").covers(&pattern("https://example.com")));
        assert!(!pattern("https://api.example.com").covers(&pattern("https://api.example.com:*")));
        assert!(!pattern("http://api.example.com").covers(&pattern("https://api.example.com")));
    }

    #[test]
    fn a_request_with_credentials_in_its_authority_is_refused() {
        assert!(Origin::of_request(Scheme::Https, "user@example.com").is_err());
    }
}
