//! Which addresses a granted name may resolve to.
//!
//! An allowed origin is a name; what the plugin reaches is the address the
//! name resolves to when the request is made. A name anyone can point at
//! `127.0.0.1` or `169.254.169.254` (the cloud metadata service) would turn
//! a grant for a public API into a way into the host's own network. So a
//! request whose name resolves to an internal address is refused unless
//! that address is granted explicitly, and the connection goes to the
//! address that was checked, never to a second lookup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Addresses granted although internal (`allowed_addresses`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        AddressPolicy { allowed }
    }

    /// `Err` naming why, when `address` is internal and not granted.
    pub fn check(&self, address: IpAddr) -> Result<(), String> {
        let address = canonical(address);
        if self.allowed.iter().any(|net| net.contains(&address)) {
            return Ok(());
        }
        match internal_kind(address) {
            None => Ok(()),
            Some(kind) => Err(format!(
                "{address} is a {kind} address; grant it in plugin.capabilities.http.allowed_addresses to reach it"
            )),
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is checked as the
/// IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of internal address this is, if it is one.
fn internal_kind(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [first, second, ..] = address.octets();
    if address.is_loopback() {
        Some("loopback")
    } else if address.is_private() {
        Some("private")
    } else if address.is_link_local() {
        Some("link-local")
    } else if first == 100 && (64..128).contains(&second) {
        Some("shared (carrier-grade NAT)")
    } else if address.is_unspecified() || first == 0 {
        Some("unspecified")
    } else if address.is_multicast() || address.is_broadcast() || first >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

fn internal_v6(address: Ipv6Addr) -> Option<&'static str> {
    let first = address.segments()[0];
    if address.is_loopback() {
        Some("loopback")
    } else if address.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique local (private)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if address.is_multicast() {
        Some("multicast or reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &AddressPolicy, address: &str) -> bool {
        policy.check(address.parse().expect("an address")).is_err()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(refused(&policy, address), "{address} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = AddressPolicy::default();
        for address in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(!refused(&policy, address), "{address} is public");
        }
    }

    #[test]
    fn a_granted_network_opens_exactly_its_addresses() {
        let policy = AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()]);
        assert!(!refused(&policy, "127.0.0.1"));
        assert!(!refused(&policy, "::ffff:127.0.0.1"));
        assert!(!refused(&policy, "10.200.0.1"));
        assert!(refused(&policy, "127.0.0.2"));
        assert!(refused(&policy, "192.168.0.1"));
        let reason = policy.check("169.254.169.254".parse().unwrap()).unwrap_err();
        assert!(
            reason.contains("link-local") && reason.contains("allowed_addresses"),
            "{reason}"
        );
    }
}
