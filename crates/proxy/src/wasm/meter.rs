//! What a plugin's callbacks cost (beyond Envoy): each callback's time on its thread, as
//! counters per plugin for Prometheus: `wasm.<plugin>.callback.<callback>.calls` and
//! `.cpu_ns` (tags `plugin` and `callback`: `envoy_wasm_callback_cpu_ns{plugin=..,callback=..}`;
//! their rates give a callback's mean cost), and `wasm.<plugin>.cpu_ns` in all; and what it
//! may spend ([`crate::wasm::budget`]), counted in `wasm.<plugin>.cpu_budget_exceeded`.
//! `/wasm` shows each VM's with histograms ([`crate::wasm::status::VmStatus`]): a stats
//! histogram per callback cost a request with a filter 1.5% more.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use crate::wasm::budget::BudgetPolicy;
use crate::wasm::status::VmStatus;

use wasmproxy_stats::{Counter, Scope, Store};

/// One plugin's callback stats and budget, on one thread.
pub struct PluginMeter {
    plugin: String,
    scope: Scope,
    cpu_ns: Counter,
    /// Each callback's counters (calls, nanoseconds), made the first time it runs, by its
    /// slot in `/wasm` ([`VmStatus::slot`]); those outside `/wasm`'s table by name.
    callbacks: RefCell<Vec<Option<(Counter, Counter)>>>,
    others: RefCell<Vec<(&'static str, Counter, Counter)>>,
    budget: Option<Budget>,
}

/// A budget and what was spent of it in the current window.
struct Budget {
    policy: BudgetPolicy,
    window_start: Cell<Instant>,
    spent_ns: Cell<u64>,
    /// Reported in this window already.
    reported: Cell<bool>,
    exceeded: Counter,
}

impl PluginMeter {
    /// The stats of the plugin named `plugin`, with its budget if it has one.
    pub fn new(store: &Arc<Store>, plugin: &str, budget: Option<BudgetPolicy>) -> PluginMeter {
        let scope = Scope::new(store, &format!("wasm.{plugin}."), "wasm.", &[("plugin", plugin)]);
        let budget = budget.map(|policy| Budget {
            policy,
            window_start: Cell::new(Instant::now()),
            spent_ns: Cell::new(0),
            reported: Cell::new(false),
            exceeded: scope.counter("cpu_budget_exceeded"),
        });
        PluginMeter {
            plugin: plugin.to_string(),
            cpu_ns: scope.counter("cpu_ns"),
            scope,
            callbacks: RefCell::default(),
            others: RefCell::default(),
            budget,
        }
    }

    /// The export `callback` (`proxy_on_request_headers`, at `slot` in `/wasm`) ran for
    /// `nanos`. If that spent the plugin's budget and the budget fails it, why (for the VM's
    /// failure).
    pub fn note(&self, slot: usize, callback: &'static str, nanos: u64) -> Option<String> {
        self.record(slot, callback, nanos);
        self.charge(nanos)
    }

    fn record(&self, slot: usize, callback: &'static str, nanos: u64) {
        self.cpu_ns.add(nanos);
        let count = |(calls, cpu_ns): (&Counter, &Counter)| {
            calls.inc();
            cpu_ns.add(nanos);
        };
        if slot == VmStatus::OTHER {
            let mut others = self.others.borrow_mut();
            let at = others.iter().position(|(c, _, _)| *c == callback).unwrap_or_else(|| {
                let (calls, cpu_ns) = self.counters(callback);
                others.push((callback, calls, cpu_ns));
                others.len() - 1
            });
            let (_, calls, cpu_ns) = &others[at];
            return count((calls, cpu_ns));
        }
        let mut callbacks = self.callbacks.borrow_mut();
        if callbacks.len() <= slot {
            callbacks.resize_with(slot + 1, || None);
        }
        let (calls, cpu_ns) = callbacks[slot].get_or_insert_with(|| self.counters(callback));
        count((calls, cpu_ns));
    }

    /// The counters of `callback`: `callback.<name>.calls` and `.cpu_ns`, tagged.
    fn counters(&self, callback: &'static str) -> (Counter, Counter) {
        let short = short_name(callback);
        let counter = |suffix: &str| {
            let name = self.scope.tagged_name(
                &format!("callback.{short}.{suffix}"),
                &format!("callback.{suffix}"),
                ("callback", short),
            );
            self.scope.store().counter(name)
        };
        (counter("calls"), counter("cpu_ns"))
    }

    /// Charges the budget's window; past the budget, reports once per window (and says
    /// why the VM is failed if the budget fails it).
    fn charge(&self, nanos: u64) -> Option<String> {
        let b = self.budget.as_ref()?;
        let now = Instant::now();
        let elapsed = now.duration_since(b.window_start.get());
        if elapsed >= b.policy.window {
            b.window_start.set(now);
            b.spent_ns.set(0);
            b.reported.set(false);
        }
        let spent = b.spent_ns.get() + nanos;
        b.spent_ns.set(spent);
        let allowed = b.policy.window.as_nanos() as u64 / 100 * b.policy.percent;
        if spent <= allowed || b.reported.replace(true) {
            return None;
        }
        b.exceeded.inc();
        let message = format!(
            "plugin {:?} spent {} ms in callbacks in {:.1} s, over its CPU budget of {}% of its thread ({} ms per {} s)",
            self.plugin,
            spent / 1_000_000,
            elapsed.min(b.policy.window).as_secs_f64(),
            b.policy.percent,
            allowed / 1_000_000,
            b.policy.window.as_secs()
        );
        if b.policy.fail {
            tracing::error!(target: "wasm", "{message}: its VM is failed");
            Some(message)
        } else {
            tracing::warn!(target: "wasm", "{message}");
            None
        }
    }
}

/// A callback's name without the ABI's `proxy_` (`on_request_headers`).
pub fn short_name(callback: &'static str) -> &'static str {
    callback.strip_prefix("proxy_").unwrap_or(callback)
}
