//! CPU budgets (beyond Envoy): the share of a thread's time a plugin's callbacks may take
//! in a window, beside the per-callback deadline. Past it, the plugin is reported (a stat,
//! a warning) and, if its budget says so, its VM is failed, its failure policy deciding
//! what follows. Set in `layered_runtime`, for every plugin and per plugin name.

use std::time::Duration;

use crate::wasm::plugin_settings::PerPlugin;

/// A plugin's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// The share of one thread, in percent (1 to 100).
    pub percent: u64,
    /// The window the share is measured over.
    pub window: Duration,
    /// Whether a plugin past it is failed (else only reported).
    pub fail: bool,
}

/// One setting of a budget, as read (each field falls back to the setting for every plugin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetSettings {
    percent: Option<u64>,
    window: Option<Duration>,
    fail: Option<bool>,
}

/// The budgets of a configuration: for every plugin, and per plugin name. None by default.
pub type Budgets = PerPlugin<BudgetSettings>;

/// The window when none is set.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

impl Budgets {
    /// The budget of the plugin `name`, if it has one (a `percent` set for it or for all).
    pub fn policy(&self, name: &str) -> Option<BudgetPolicy> {
        let own = self.own(name);
        Some(BudgetPolicy {
            percent: own.percent.or(self.all.percent)?,
            window: own.window.or(self.all.window).unwrap_or(DEFAULT_WINDOW),
            fail: own.fail.or(self.all.fail).unwrap_or(false),
        })
    }

    /// Takes a runtime key if it is one of the budgets' (`wasmproxy.wasm.cpu_budget.<field>`,
    /// `wasmproxy.wasm.plugin.<name>.cpu_budget.<field>`): `Ok(false)` for another key, `Err`
    /// for a budget key with an unknown field or a value out of range.
    pub fn read(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let Some((settings, field)) = self.slot(key, "cpu_budget") else { return Ok(false) };
        let number = |min: u64, max: u64| match value.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("layered_runtime {key}: {value:?} is not a whole number from {min} to {max}")),
        };
        match field {
            "percent" => settings.percent = Some(number(1, 100)?),
            "window_s" => settings.window = Some(Duration::from_secs(number(1, 3600)?)),
            "action" => {
                settings.fail = Some(match value.trim() {
                    "report" => false,
                    "fail" => true,
                    other => return Err(format!("layered_runtime {key}: {other:?} is not report or fail")),
                })
            }
            _ => {
                return Err(format!(
                    "layered_runtime {key}: unknown CPU budget setting {field:?} (percent, window_s or action)"
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
    fn a_budget_needs_a_share_and_per_plugin_settings_win() {
        let mut b = Budgets::default();
        assert_eq!(b.policy("any"), None);
        assert_eq!(b.read("wasmproxy.wasm.cpu_budget.window_s", "5"), Ok(true));
        assert_eq!(b.policy("any"), None, "a window alone is no budget");
        assert_eq!(b.read("wasmproxy.wasm.cpu_budget.percent", "50"), Ok(true));
        assert_eq!(b.read("wasmproxy.wasm.plugin.my.go.plugin.cpu_budget.percent", "10"), Ok(true));
        assert_eq!(b.read("wasmproxy.wasm.plugin.my.go.plugin.cpu_budget.action", "fail"), Ok(true));
        assert_eq!(b.read("wasmproxy.wasm.plugin.other.recycle.max_streams", "3"), Ok(false));
        let window = Duration::from_secs(5);
        assert_eq!(b.policy("any"), Some(BudgetPolicy { percent: 50, window, fail: false }));
        assert_eq!(b.policy("my.go.plugin"), Some(BudgetPolicy { percent: 10, window, fail: true }));
        for (key, value, error) in [
            ("wasmproxy.wasm.cpu_budget.percent", "0", "not a whole number from 1 to 100"),
            ("wasmproxy.wasm.cpu_budget.percent", "101", "not a whole number from 1 to 100"),
            ("wasmproxy.wasm.cpu_budget.action", "stop", "\"stop\" is not report or fail"),
            ("wasmproxy.wasm.plugin.x.cpu_budget.share", "3", "unknown CPU budget setting \"share\""),
        ] {
            let e = b.read(key, value).unwrap_err();
            assert!(e.contains(error) && e.contains(key), "{e}");
        }
    }
}
