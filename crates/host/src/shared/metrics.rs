//! Plugin-defined metrics: process-wide by name, ids per VM as Envoy allocates them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmproxy_abi::MetricType;

use super::lock;

/// Envoy's default histogram bucket bounds.
pub const DEFAULT_HISTOGRAM_BUCKETS: [f64; 20] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0, 7200000.0,
];

/// One metric. Counters and gauges are a single atomic; histograms count per bucket.
pub struct Metric {
    /// Its type.
    pub kind: MetricType,
    /// The name the plugin gave (shown as `wasmcustom.<name>`).
    pub name: String,
    value: AtomicU64,
    sum: AtomicU64,
    buckets: Vec<AtomicU64>,
}

/// A snapshot of one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value.
    Gauge(u64),
    /// A histogram: sample count, sum, and cumulative count per default bucket.
    Histogram {
        /// Samples recorded.
        count: u64,
        /// Their sum.
        sum: u64,
        /// Cumulative counts for [`DEFAULT_HISTOGRAM_BUCKETS`].
        buckets: Vec<u64>,
    },
}

impl Metric {
    fn new(kind: MetricType, name: &str) -> Self {
        let buckets = if kind == MetricType::Histogram {
            DEFAULT_HISTOGRAM_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect()
        } else {
            Vec::new()
        };
        Metric { kind, name: name.to_string(), value: AtomicU64::new(0), sum: AtomicU64::new(0), buckets }
    }

    /// Adds to a counter or gauge (a negative delta lowers a gauge).
    pub fn add(&self, delta: i64) {
        self.value.fetch_add(delta as u64, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(&self, value: u64) {
        self.value.store(value, Ordering::Relaxed);
    }

    /// Records a histogram sample.
    pub fn record(&self, value: u64) {
        self.value.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        for (bound, count) in DEFAULT_HISTOGRAM_BUCKETS.iter().zip(&self.buckets) {
            if value as f64 <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counter's or gauge's value (a histogram's sample count).
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// A snapshot.
    pub fn value(&self) -> MetricValue {
        match self.kind {
            MetricType::Counter => MetricValue::Counter(self.get()),
            MetricType::Gauge => MetricValue::Gauge(self.get()),
            MetricType::Histogram => MetricValue::Histogram {
                count: self.get(),
                sum: self.sum.load(Ordering::Relaxed),
                buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            },
        }
    }
}

/// Every metric plugins defined, by type and name.
#[derive(Default)]
pub struct Metrics {
    by_name: Mutex<HashMap<(u32, String), Arc<Metric>>>,
}

impl Metrics {
    /// The metric of that type and name, created on first use.
    pub fn define(&self, kind: MetricType, name: &str) -> Arc<Metric> {
        lock(&self.by_name)
            .entry((kind as u32, name.to_string()))
            .or_insert_with(|| Arc::new(Metric::new(kind, name)))
            .clone()
    }

    /// Every metric, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, MetricValue)> {
        let mut all: Vec<_> = lock(&self.by_name).values().map(|m| (m.name.clone(), m.value())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// One metric's value by name, if defined.
    pub fn value(&self, name: &str) -> Option<MetricValue> {
        lock(&self.by_name).values().find(|m| m.name == name).map(|m| m.value())
    }
}
