//! Which capabilities a plugin asks for, read off its imports, so a plugin
//! its stage does not grant is refused at load (startup or hot reload)
//! rather than failing on its first message.

use std::fmt;

use super::grants::CapabilityGrants;

/// A capability a plugin can import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// `wasi:http/outgoing-handler`: requests to other services.
    Http,
    /// `wasi:keyvalue/{store,atomics,batch}`: state in named buckets.
    KeyValue,
}

impl Capability {
    /// The stage key that grants it.
    pub fn stage_key(self) -> &'static str {
        match self {
            Capability::Http => "plugin.capabilities.http",
            Capability::KeyValue => "plugin.capabilities.keyvalue",
        }
    }

    /// The interfaces (without version) whose import asks for it.
    fn interfaces(self) -> &'static [&'static str] {
        match self {
            Capability::Http => &["wasi:http/outgoing-handler"],
            Capability::KeyValue => &["wasi:keyvalue/store", "wasi:keyvalue/atomics", "wasi:keyvalue/batch"],
        }
    }

    fn granted_by(self, grants: &CapabilityGrants) -> bool {
        match self {
            Capability::Http => grants.http.is_some(),
            Capability::KeyValue => grants.keyvalue.is_some(),
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Capability::Http => "outbound HTTP",
            Capability::KeyValue => "key-value store",
        })
    }
}

const ALL: [Capability; 2] = [Capability::Http, Capability::KeyValue];

/// The capabilities among a component's import names, each with the
/// import that asks for it (`wasi:http/outgoing-handler@0.2.12`).
pub fn capabilities_imported(imports: &[String]) -> Vec<(Capability, String)> {
    imports
        .iter()
        .filter_map(|import| {
            let interface = import.split('@').next().unwrap_or(import);
            ALL.into_iter()
                .find(|capability| capability.interfaces().contains(&interface))
                .map(|capability| (capability, import.clone()))
        })
        .collect()
}

/// The first capability the plugin imports that `grants` does not grant,
/// with its import name.
pub fn ungranted(imports: &[String], grants: &CapabilityGrants) -> Option<(Capability, String)> {
    capabilities_imported(imports)
        .into_iter()
        .find(|(capability, _)| !capability.granted_by(grants))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imports(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn the_outgoing_handler_import_is_the_http_capability() {
        let names = imports(&[
            "wasi:io/poll@0.2.12",
            "wasi:http/types@0.2.12",
            "wasi:http/outgoing-handler@0.2.12",
            "sluice:plugin/logging@0.1.0",
        ]);
        assert_eq!(
            capabilities_imported(&names),
            [(Capability::Http, "wasi:http/outgoing-handler@0.2.12".to_owned())]
        );
    }

    #[test]
    fn an_import_without_a_grant_is_named_with_the_key_that_grants_it() {
        let names = imports(&["wasi:http/outgoing-handler@0.2.3"]);
        let none = CapabilityGrants::default();
        let (capability, import) = ungranted(&names, &none).expect("not granted");
        assert_eq!(capability.stage_key(), "plugin.capabilities.http");
        assert_eq!(import, "wasi:http/outgoing-handler@0.2.3");
        let granted: CapabilityGrants =
            toml::from_str("[http]\nallowed_origins = \"https://api.example.com\"").expect("grant");
        assert_eq!(ungranted(&names, &granted), None);
        assert_eq!(ungranted(&imports(&["wasi:io/poll@0.2.12"]), &none), None);
    }

    #[test]
    fn any_keyvalue_interface_is_the_keyvalue_capability() {
        let names = imports(&["wasi:keyvalue/store@0.2.0-draft", "wasi:keyvalue/atomics@0.2.0-draft"]);
        let none = CapabilityGrants::default();
        let (capability, import) = ungranted(&names, &none).expect("not granted");
        assert_eq!(capability, Capability::KeyValue);
        assert_eq!(capability.stage_key(), "plugin.capabilities.keyvalue");
        assert_eq!(import, "wasi:keyvalue/store@0.2.0-draft");
        let granted: CapabilityGrants = toml::from_str("[keyvalue]").expect("grant");
        assert_eq!(ungranted(&names, &granted), None);
    }
}
