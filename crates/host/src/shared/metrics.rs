//! Plugin-defined metrics: process-wide by name, ids per VM as Envoy allocates them. They
//! live in the process's stats store as `wasmcustom.<name>`, Envoy's name for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmproxy_abi::MetricType;
use wasmproxy_stats::store::Unit;
use wasmproxy_stats::{Counter, Gauge, Histogram, StatName, Store};

use super::lock;

/// One plugin metric: a handle on its stat.
#[derive(Clone)]
pub enum Metric {
    /// A counter.
    Counter(Counter),
    /// A gauge.
    Gauge(Gauge),
    /// A histogram.
    Histogram(Histogram),
}

/// A snapshot of one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value.
    Gauge(u64),
    /// A histogram's flushed samples: their count and approximate sum.
    Histogram {
        /// Samples flushed so far.
        count: u64,
        /// Their approximate sum (circllhist's).
        sum: f64,
    },
}

impl Metric {
    /// Adds to a counter or gauge (a negative delta lowers a gauge).
    pub fn add(&self, delta: i64) {
        match self {
            Metric::Counter(c) => c.add(delta.max(0) as u64),
            Metric::Gauge(g) if delta < 0 => g.sub(delta.unsigned_abs()),
            Metric::Gauge(g) => g.add(delta as u64),
            Metric::Histogram(h) => h.record(delta.max(0) as u64),
        }
    }

    /// `proxy_record_metric`: adds to a counter, sets a gauge, records a histogram sample.
    pub fn record(&self, value: u64) {
        match self {
            Metric::Counter(c) => c.add(value),
            Metric::Gauge(g) => g.set(value),
            Metric::Histogram(h) => h.record(value),
        }
    }

    /// The counter's or gauge's value (0 for a histogram).
    pub fn get(&self) -> u64 {
        match self {
            Metric::Counter(c) => c.value(),
            Metric::Gauge(g) => g.value(),
            Metric::Histogram(_) => 0,
        }
    }

    /// A snapshot.
    pub fn value(&self) -> MetricValue {
        match self {
            Metric::Counter(c) => MetricValue::Counter(c.value()),
            Metric::Gauge(g) => MetricValue::Gauge(g.value()),
            Metric::Histogram(h) => {
                let f = h.flushed();
                MetricValue::Histogram { count: f.cumulative.count(), sum: f.cumulative.approx_sum() }
            }
        }
    }
}

/// Every metric plugins defined, by type and name, in the process's stats store.
pub struct Metrics {
    store: Arc<Store>,
    by_name: Mutex<HashMap<(u32, String), Metric>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { store: Store::new(), by_name: Mutex::default() }
    }
}

impl Metrics {
    /// The stats store the metrics live in (the proxy keeps its own stats there too).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metric of that type and name, created on first use; none past
    /// `PLUGIN_METRICS_MAX` distinct metrics (each lives as long as the process).
    pub fn define(&self, kind: MetricType, name: &str) -> Option<Metric> {
        let mut by_name = lock(&self.by_name);
        let key = (kind as u32, name.to_string());
        if !by_name.contains_key(&key) && by_name.len() >= wasmproxy_abi::limits::PLUGIN_METRICS_MAX {
            return None;
        }
        let metric = by_name
            .entry(key)
            .or_insert_with(|| {
                let stat = StatName::plain(format!("wasmcustom.{name}"));
                match kind {
                    MetricType::Counter => Metric::Counter(self.store.counter(stat)),
                    MetricType::Gauge => Metric::Gauge(self.store.gauge(stat)),
                    MetricType::Histogram => Metric::Histogram(self.store.histogram(stat, Unit::Unspecified)),
                }
            })
            .clone();
        Some(metric)
    }

    /// One metric's value by the name the plugin gave, if defined.
    pub fn value(&self, name: &str) -> Option<MetricValue> {
        lock(&self.by_name).iter().find(|((_, n), _)| n == name).map(|(_, m)| m.value())
    }
}
