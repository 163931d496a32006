//! Run-time tunables from `layered_runtime`, where Envoy users set them: Envoy's own keys
//! for connection limits, and wasmproxy's for the plugin sandbox (Envoy has no deadline
//! and a fixed memory cap). Keys wasmproxy does not know are left alone, as Envoy does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::wasm::budget::Budgets;
use crate::wasm::instance::PluginRules;
use crate::wasm::recycle::Recycling;

/// The plugin callback deadline: a callback running longer fails its VM.
pub const CALLBACK_DEADLINE_MS: &str = "wasmproxy.wasm.callback_deadline_ms";
/// The most linear memory one VM may have, in bytes.
pub const MEMORY_LIMIT_BYTES: &str = "wasmproxy.wasm.memory_limit_bytes";
/// Envoy's per-listener connection limit: `envoy.resource_limits.listener.<name>.connection_limit`.
const LISTENER_LIMIT_PREFIX: &str = "envoy.resource_limits.listener.";
const LISTENER_LIMIT_SUFFIX: &str = ".connection_limit";
/// Envoy's process-wide connection limit.
pub const GLOBAL_MAX_CONNECTIONS: &str = "overload.global_downstream_max_connections";

/// The tunables a configuration sets.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tunables {
    /// [`CALLBACK_DEADLINE_MS`].
    pub callback_deadline: Option<Duration>,
    /// [`MEMORY_LIMIT_BYTES`].
    pub memory_limit_bytes: Option<usize>,
    /// Connection limits by listener name.
    pub listener_connection_limits: HashMap<String, u64>,
    /// [`GLOBAL_MAX_CONNECTIONS`].
    pub global_max_connections: Option<u64>,
    /// When plugins' VMs are replaced (`wasmproxy.wasm.recycle.*`, per plugin
    /// `wasmproxy.wasm.plugin.<name>.recycle.*`).
    pub recycling: Recycling,
    /// The plugins' CPU budgets (`wasmproxy.wasm.cpu_budget.*`, per plugin
    /// `wasmproxy.wasm.plugin.<name>.cpu_budget.*`).
    pub budgets: Budgets,
}

impl Tunables {
    /// The rules of the plugins (recycling, budgets) for the workers, ticking on their
    /// timers unless `manual_ticks`.
    pub fn plugin_rules(&self, manual_ticks: bool) -> PluginRules {
        PluginRules { recycling: self.recycling.clone(), budgets: self.budgets.clone(), manual_ticks }
    }

    /// Reads the flattened runtime values; a value that is not a number names its key.
    pub fn read(runtime: &[(String, String)]) -> Result<Tunables, String> {
        let number = |key: &str, value: &str, min: u64, max: u64| -> Result<u64, String> {
            match value.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(format!("layered_runtime {key}: {value:?} is not a whole number from {min} to {max}")),
            }
        };
        let mut t = Tunables::default();
        for (key, value) in runtime {
            if t.recycling.read(key, value)? || t.budgets.read(key, value)? {
                continue;
            }
            if key == CALLBACK_DEADLINE_MS {
                t.callback_deadline = Some(Duration::from_millis(number(key, value, 1, 3_600_000)?));
            } else if key == MEMORY_LIMIT_BYTES {
                // At least one Wasm page; at most the 4 GiB a 32-bit module can address.
                t.memory_limit_bytes = Some(number(key, value, 65_536, 1 << 32)? as usize);
            } else if key == GLOBAL_MAX_CONNECTIONS {
                t.global_max_connections = Some(number(key, value, 0, u64::MAX)?);
            } else if let Some(name) =
                key.strip_prefix(LISTENER_LIMIT_PREFIX).and_then(|k| k.strip_suffix(LISTENER_LIMIT_SUFFIX))
            {
                t.listener_connection_limits.insert(name.to_string(), number(key, value, 0, u64::MAX)?);
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn known_keys_are_read_and_others_left_alone() {
        let t = Tunables::read(&pairs(&[
            (CALLBACK_DEADLINE_MS, "250"),
            (MEMORY_LIMIT_BYTES, "67108864"),
            ("envoy.resource_limits.listener.main.connection_limit", "10"),
            (GLOBAL_MAX_CONNECTIONS, "1000"),
            ("envoy.reloadable_features.something", "true"),
        ]))
        .expect("valid");
        assert_eq!(t.callback_deadline, Some(Duration::from_millis(250)));
        assert_eq!(t.memory_limit_bytes, Some(64 << 20));
        assert_eq!(t.listener_connection_limits.get("main"), Some(&10));
        assert_eq!(t.global_max_connections, Some(1000));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Tunables::read(&pairs(&[(CALLBACK_DEADLINE_MS, "soon")])).expect_err("refused");
        assert!(e.contains("wasmproxy.wasm.callback_deadline_ms: \"soon\""), "{e}");
        assert!(Tunables::read(&pairs(&[(MEMORY_LIMIT_BYTES, "10")])).is_err());
    }
}

/// Open downstream connections against their limits, shared by every worker.
#[derive(Debug, Default)]
pub struct ConnectionLimits {
    /// `envoy.resource_limits.listener.<name>.connection_limit`, by listener name.
    listener_limits: std::collections::HashMap<String, u64>,
    /// Each listener's open connections, by name (kept for a listener that comes back).
    open: std::sync::Mutex<std::collections::HashMap<String, Arc<AtomicU64>>>,
    global: AtomicU64,
    global_limit: Option<u64>,
}

/// One listener's open connections and limit, which its accept loops count against.
#[derive(Debug, Clone)]
pub struct ListenerLimit {
    open: Arc<AtomicU64>,
    limit: Option<u64>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The listener's `connection_limit`.
    Listener,
    /// `overload.global_downstream_max_connections`.
    Global,
}

impl ConnectionLimits {
    /// The limits the runtime sets.
    pub fn new(tunables: &Tunables) -> ConnectionLimits {
        ConnectionLimits {
            listener_limits: tunables.listener_connection_limits.clone(),
            open: Default::default(),
            global: Default::default(),
            global_limit: tunables.global_max_connections,
        }
    }

    /// The count and limit of the listener named `name`.
    pub fn listener(&self, name: &str) -> ListenerLimit {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        ListenerLimit {
            open: open.entry(name.to_string()).or_default().clone(),
            limit: self.listener_limits.get(name).copied(),
        }
    }

    /// Counts a new connection on `listener` in, or says which limit it is over.
    pub fn admit(&self, listener: &ListenerLimit) -> Result<(), Overflow> {
        // Each count goes up first; one over its limit is taken back.
        let over = |open: &AtomicU64, limit: Option<u64>| open.fetch_add(1, Relaxed) >= limit.unwrap_or(u64::MAX);
        if over(&self.global, self.global_limit) {
            self.global.fetch_sub(1, Relaxed);
            return Err(Overflow::Global);
        }
        if over(&listener.open, listener.limit) {
            listener.open.fetch_sub(1, Relaxed);
            self.global.fetch_sub(1, Relaxed);
            return Err(Overflow::Listener);
        }
        Ok(())
    }

    /// A connection admitted on `listener` ended.
    pub fn release(&self, listener: &ListenerLimit) {
        self.global.fetch_sub(1, Relaxed);
        listener.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn listener_and_global_limits_refuse_the_connection_over_them() {
        let t = Tunables {
            listener_connection_limits: [("a".to_string(), 1)].into(),
            global_max_connections: Some(2),
            ..Default::default()
        };
        let limits = ConnectionLimits::new(&t);
        let (a, b) = (limits.listener("a"), limits.listener("b"));
        assert_eq!(limits.admit(&a), Ok(()));
        assert_eq!(limits.admit(&a), Err(Overflow::Listener));
        assert_eq!(limits.admit(&b), Ok(()));
        assert_eq!(limits.admit(&b), Err(Overflow::Global));
        limits.release(&a);
        assert_eq!(limits.admit(&b), Ok(()));
        // A listener that comes back under the same name counts on.
        assert_eq!(limits.listener("a").open.load(Relaxed), 0);
    }
}
