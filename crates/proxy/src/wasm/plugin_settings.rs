//! Settings kept for every plugin and per plugin name, read from `layered_runtime` keys:
//! `wasmproxy.wasm.<group>.<field>` for every plugin and
//! `wasmproxy.wasm.plugin.<name>.<group>.<field>` for the plugin of that name (the name may
//! hold dots). Recycling and CPU budgets are read this way.

use std::collections::HashMap;

/// One group's settings: for every plugin, and per plugin name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerPlugin<T> {
    /// `wasmproxy.wasm.<group>.*`.
    pub all: T,
    /// `wasmproxy.wasm.plugin.<name>.<group>.*`, by plugin name.
    pub plugins: HashMap<String, T>,
}

/// The runtime keys for one plugin start with this.
const PLUGIN_PREFIX: &str = "wasmproxy.wasm.plugin.";

impl<T: Default + Copy> PerPlugin<T> {
    /// The settings of the plugin `name` alone (each field falls back to `all` at the caller).
    pub fn own(&self, name: &str) -> T {
        self.plugins.get(name).copied().unwrap_or_default()
    }

    /// The settings a key of `group` (`recycle`) sets, and the field it names; `None` if the
    /// key is not one of the group's.
    pub fn slot<'k>(&mut self, key: &'k str, group: &str) -> Option<(&mut T, &'k str)> {
        if let Some(field) = key.strip_prefix("wasmproxy.wasm.").and_then(|k| k.strip_prefix(group)?.strip_prefix('.'))
        {
            return Some((&mut self.all, field));
        }
        let (name, field) = key.strip_prefix(PLUGIN_PREFIX)?.rsplit_once(&format!(".{group}."))?;
        Some((self.plugins.entry(name.to_string()).or_default(), field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_every_plugin_or_one_by_its_dotted_name() {
        let mut s = PerPlugin::<u8>::default();
        assert_eq!(s.slot("wasmproxy.wasm.recycle.max_streams", "recycle").map(|(_, f)| f), Some("max_streams"));
        *s.slot("wasmproxy.wasm.plugin.my.go.plugin.recycle.max_age_s", "recycle").unwrap().0 = 7;
        assert_eq!((s.own("my.go.plugin"), s.own("other")), (7, 0));
        assert!(s.slot("wasmproxy.wasm.recyclers.x", "recycle").is_none());
        assert!(s.slot("wasmproxy.wasm.plugin.x.cpu_budget.percent", "recycle").is_none());
        assert!(s.slot("wasmproxy.wasm.callback_deadline_ms", "recycle").is_none());
    }
}
