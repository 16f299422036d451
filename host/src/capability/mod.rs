//! What a plugin may reach beyond its own memory, granted per stage and
//! denied by default: outbound HTTP to chosen origins, with secrets the
//! host adds to requests so the plugin never holds them; key-value state in
//! named buckets ([`keyvalue`]).
//!
//! The decisions (may this request go out, to this address) are pure
//! functions ([`HttpGrant::decide`], [`AddressPolicy::check`]); the wasmtime
//! hook that applies them to a plugin's requests is [`OutboundHttp`].

mod address_policy;
mod capped_body;
mod grants;
mod http_grant;
mod imports;
pub mod keyvalue;
mod origin;
mod outbound_http;
mod request_body;

pub use address_policy::AddressPolicy;
pub use grants::{CapabilityGrants, GrantError, HttpGrantSettings, SecretHeaderSettings, SecretSource};
pub use http_grant::{Denial, HttpGrant};
pub use imports::{Capability, capabilities_imported, ungranted};
pub use origin::{Origin, OriginPattern, Scheme};
pub use outbound_http::{CallContext, CallerMessage, OutboundHttp};
