//! Telling what kind of file a would-be plugin is, before and after
//! compiling it, so errors can say "core module" instead of "parse error".

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A component (version 0x0d, layer 1): what plugins are.
    Component,
    /// A core module (version 1, layer 0): needs wrapping into a component.
    CoreModule,
    /// Starts with the Wasm magic but is cut off or of an unknown version.
    UnknownWasm,
    /// Not WebAssembly at all.
    NotWasm,
}

const MAGIC: &[u8; 4] = b"\0asm";

/// Classify a file by its 8-byte header.
pub fn wasm_kind(bytes: &[u8]) -> WasmKind {
    if !bytes.starts_with(MAGIC) {
        return WasmKind::NotWasm;
    }
    match bytes.get(4..8) {
        Some([0x0d, 0x00, 0x01, 0x00]) => WasmKind::Component,
        Some([0x01, 0x00, 0x00, 0x00]) => WasmKind::CoreModule,
        _ => WasmKind::UnknownWasm,
    }
}

/// A component's top-level exports, in declaration order.
pub(crate) fn export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, item)| format!("{name} ({})", item_kind(&item.ty)))
        .collect()
}

/// A component's imports (interfaces and functions), in declaration order.
pub(crate) fn import_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Required exports the component lacks.
pub(crate) fn missing_exports(engine: &Engine, component: &Component, required: &[&str]) -> Vec<String> {
    let ty = component.component_type();
    let present: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    required
        .iter()
        .filter(|name| !present.contains(name))
        .map(|name| (*name).to_owned())
        .collect()
}

fn item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::CoreFunc(_) => "core function",
        ComponentItem::Module(_) => "core module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "interface",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}
