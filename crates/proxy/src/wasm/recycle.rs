//! VM recycling (beyond Envoy): a VM past its plugin's soft memory limit, age or number of
//! streams hands new streams to a fresh VM with the same plugins and goes once its last
//! stream ends, so a plugin whose memory only grows (Go's) stays bounded without a restart.
//! Set in `layered_runtime`, for every plugin and per plugin name.

use std::time::Duration;

use crate::wasm::plugin_settings::PerPlugin;

/// When a plugin's VM is replaced; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecyclePolicy {
    /// Past this much linear memory (bytes, checked as each stream starts).
    pub memory_bytes: Option<u64>,
    /// Past this age.
    pub max_age: Option<Duration>,
    /// Once this many streams (HTTP streams or TCP connections) started in it.
    pub max_streams: Option<u64>,
}

/// Why a VM is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecycleReason {
    /// Its linear memory passed the soft limit.
    Memory,
    /// It is older than the maximum age.
    Age,
    /// It served its maximum number of streams.
    Streams,
}

impl RecycleReason {
    /// The reason's name, in logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            RecycleReason::Memory => "memory",
            RecycleReason::Age => "age",
            RecycleReason::Streams => "streams",
        }
    }
}

impl RecyclePolicy {
    /// Whether no limit is set.
    pub fn is_off(&self) -> bool {
        *self == RecyclePolicy::default()
    }

    /// Why a VM with this much `memory`, this `age` and this many `streams` started is due
    /// for replacement, if it is.
    pub fn due(&self, memory: u64, age: Duration, streams: u64) -> Option<RecycleReason> {
        if self.memory_bytes.is_some_and(|limit| memory > limit) {
            Some(RecycleReason::Memory)
        } else if self.max_age.is_some_and(|max| age >= max) {
            Some(RecycleReason::Age)
        } else if self.max_streams.is_some_and(|max| streams >= max) {
            Some(RecycleReason::Streams)
        } else {
            None
        }
    }
}

/// The recycling settings of a configuration: for every plugin, and per plugin name.
pub type Recycling = PerPlugin<RecyclePolicy>;

impl Recycling {
    /// The policy of the plugin `name`: its own settings, each over the one for every plugin.
    pub fn policy(&self, name: &str) -> RecyclePolicy {
        let own = self.own(name);
        RecyclePolicy {
            memory_bytes: own.memory_bytes.or(self.all.memory_bytes),
            max_age: own.max_age.or(self.all.max_age),
            max_streams: own.max_streams.or(self.all.max_streams),
        }
    }

    /// Takes a runtime key if it is one of recycling's (`wasmproxy.wasm.recycle.<field>`,
    /// `wasmproxy.wasm.plugin.<name>.recycle.<field>`): `Ok(false)` for another key, `Err`
    /// for a recycling key with an unknown field or a value out of range.
    pub fn read(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let Some((policy, field)) = self.slot(key, "recycle") else { return Ok(false) };
        let number = |min: u64| match value.trim().parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(format!("layered_runtime {key}: {value:?} is not a whole number of at least {min}")),
        };
        match field {
            // At least one Wasm page.
            "memory_bytes" => policy.memory_bytes = Some(number(65_536)?),
            "max_age_s" => policy.max_age = Some(Duration::from_secs(number(1)?)),
            "max_streams" => policy.max_streams = Some(number(1)?),
            _ => {
                return Err(format!(
                    "layered_runtime {key}: unknown recycling setting {field:?} (memory_bytes, max_age_s or max_streams)"
                ));
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_plugin_settings_win_field_by_field() {
        let mut r = Recycling::default();
        assert_eq!(r.read("wasmproxy.wasm.recycle.max_streams", "1000"), Ok(true));
        assert_eq!(r.read("wasmproxy.wasm.recycle.memory_bytes", "67108864"), Ok(true));
        assert_eq!(r.read("wasmproxy.wasm.plugin.my.go.plugin.recycle.max_streams", "10"), Ok(true));
        assert_eq!(r.read("wasmproxy.wasm.plugin.other.recycle.max_age_s", "60"), Ok(true));
        assert_eq!(r.read("wasmproxy.wasm.callback_deadline_ms", "100"), Ok(false));
        let go = r.policy("my.go.plugin");
        assert_eq!((go.max_streams, go.memory_bytes, go.max_age), (Some(10), Some(64 << 20), None));
        assert_eq!(r.policy("other").max_age, Some(Duration::from_secs(60)));
        assert_eq!(r.policy("unnamed").max_streams, Some(1000));
        assert!(RecyclePolicy::default().is_off());
        let e = r.read("wasmproxy.wasm.recycle.max_requests", "3").unwrap_err();
        assert!(e.contains("unknown recycling setting \"max_requests\""), "{e}");
        assert!(r.read("wasmproxy.wasm.recycle.memory_bytes", "100").is_err());
        assert!(r.read("wasmproxy.wasm.plugin.x.recycle.max_streams", "0").is_err());
    }

    #[test]
    fn a_vm_is_due_past_any_limit() {
        let p =
            RecyclePolicy { memory_bytes: Some(1000), max_age: Some(Duration::from_secs(10)), max_streams: Some(5) };
        assert_eq!(p.due(1000, Duration::from_secs(9), 4), None);
        assert_eq!(p.due(1001, Duration::ZERO, 0), Some(RecycleReason::Memory));
        assert_eq!(p.due(0, Duration::from_secs(10), 0), Some(RecycleReason::Age));
        assert_eq!(p.due(0, Duration::ZERO, 5), Some(RecycleReason::Streams));
    }
}
