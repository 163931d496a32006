//! The stats registry: every counter, gauge and histogram by name.
//!
//! Counters and histograms keep one cell per thread slot (a cache line each), so a worker
//! adds to its own cell with no shared lock and no contended cache line; reading folds the
//! cells. Gauges are one atomic, as in Envoy (they are set as often as added to).
//! Histograms are flushed on a period (Envoy's `stats_flush_interval`): the samples since
//! the last flush become the interval histogram and join the cumulative one; `/stats`
//! shows only flushed samples, as Envoy does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::histogram::Bins;
pub use crate::tags::StatName;
use crate::tags::TagRules;

/// Thread slots per counter and histogram; threads beyond share slots (still correct:
/// the cells are atomics).
const SLOTS: usize = 8;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot, `usize::MAX` until first used (a constant start: reading it is
    /// one load, with no lazy-initialization check).
    static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

fn slot() -> usize {
    let slot = SLOT.get();
    if slot != usize::MAX {
        return slot;
    }
    let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    SLOT.set(slot);
    slot
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[repr(align(64))]
#[derive(Default)]
struct PaddedU64(AtomicU64);

#[repr(align(64))]
#[derive(Default)]
struct PaddedBins(Mutex<Bins>);

/// A counter: only goes up.
#[derive(Clone)]
pub struct Counter(Arc<CounterCells>);

struct CounterCells {
    name: StatName,
    cells: [PaddedU64; SLOTS],
    used: AtomicBool,
}

impl Counter {
    /// A counter outside any store (for figures shown elsewhere, such as `/clusters`).
    pub fn detached(name: &str) -> Counter {
        Counter(Arc::new(CounterCells {
            name: StatName::plain(name),
            cells: Default::default(),
            used: AtomicBool::new(false),
        }))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.cells[slot()].0.fetch_add(n, Ordering::Relaxed);
        if !self.0.used.load(Ordering::Relaxed) {
            self.0.used.store(true, Ordering::Relaxed);
        }
    }

    /// Sets it back to 0 (admin `/reset_counters`).
    pub fn reset(&self) {
        for c in &self.0.cells {
            c.0.store(0, Ordering::Relaxed);
        }
    }

    /// The total over every thread.
    pub fn value(&self) -> u64 {
        self.0.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }

    /// The name.
    pub fn name(&self) -> &StatName {
        &self.0.name
    }

    /// Whether it was ever added to (`/stats?usedonly`).
    pub fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

/// A gauge: set, or moved up and down.
#[derive(Clone)]
pub struct Gauge(Arc<GaugeCell>);

struct GaugeCell {
    name: StatName,
    value: AtomicU64,
    used: AtomicBool,
}

impl Gauge {
    /// A gauge outside any store.
    pub fn detached(name: &str) -> Gauge {
        Gauge(Arc::new(GaugeCell {
            name: StatName::plain(name),
            value: AtomicU64::new(0),
            used: AtomicBool::new(false),
        }))
    }

    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.value.store(v, Ordering::Relaxed);
        self.0.used.store(true, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.value.fetch_add(n, Ordering::Relaxed);
        self.0.used.store(true, Ordering::Relaxed);
    }

    /// Subtracts `n` (wrapping, as Envoy's gauges do on a bad decrement).
    pub fn sub(&self, n: u64) {
        self.0.value.fetch_sub(n, Ordering::Relaxed);
        self.0.used.store(true, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.sub(1);
    }

    /// The value.
    pub fn value(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }

    /// The name.
    pub fn name(&self) -> &StatName {
        &self.0.name
    }

    /// Whether it was ever set.
    pub fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

/// A text readout (Envoy's `TextReadout`): a string, e.g. `listener_manager.lds.version_text`.
#[derive(Clone)]
pub struct TextReadout(Arc<TextCell>);

struct TextCell {
    name: StatName,
    value: Mutex<String>,
    used: AtomicBool,
}

impl TextReadout {
    /// A text readout outside any store.
    pub fn detached(name: &str) -> TextReadout {
        TextReadout(Arc::new(TextCell {
            name: StatName::plain(name),
            value: Mutex::default(),
            used: AtomicBool::new(false),
        }))
    }

    /// Sets the text.
    pub fn set(&self, value: &str) {
        *lock(&self.0.value) = value.to_string();
        self.0.used.store(true, Ordering::Relaxed);
    }

    /// The text.
    pub fn value(&self) -> String {
        lock(&self.0.value).clone()
    }

    /// Its name.
    pub fn name(&self) -> &StatName {
        &self.0.name
    }

    /// Whether it was ever set.
    pub fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

/// A histogram of integer samples (milliseconds, bytes, a plugin's values).
#[derive(Clone)]
pub struct Histogram(Arc<HistogramCells>);

struct HistogramCells {
    name: StatName,
    unit: Unit,
    cells: [PaddedBins; SLOTS],
    flushed: Mutex<Flushed>,
    used: AtomicBool,
}

/// What a histogram's samples measure (Envoy prints it nowhere in text, but keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Unspecified (plugins' histograms).
    Unspecified,
    /// Milliseconds.
    Milliseconds,
    /// Bytes.
    Bytes,
}

/// A histogram's flushed samples.
#[derive(Debug, Clone, Default)]
pub struct Flushed {
    /// The samples of the last flush period.
    pub interval: Bins,
    /// Every flushed sample.
    pub cumulative: Bins,
}

impl Histogram {
    /// Records one sample.
    pub fn record(&self, value: u64) {
        lock(&self.0.cells[slot()].0).record(value);
        if !self.0.used.load(Ordering::Relaxed) {
            self.0.used.store(true, Ordering::Relaxed);
        }
    }

    /// Moves the samples recorded since the last flush into the interval and cumulative
    /// histograms.
    pub fn flush(&self) {
        let mut interval = Bins::new();
        for cell in &self.0.cells {
            let taken = std::mem::take(&mut *lock(&cell.0));
            interval.merge(&taken);
        }
        let mut flushed = lock(&self.0.flushed);
        flushed.cumulative.merge(&interval);
        flushed.interval = interval;
    }

    /// The flushed samples.
    pub fn flushed(&self) -> Flushed {
        lock(&self.0.flushed).clone()
    }

    /// The name.
    pub fn name(&self) -> &StatName {
        &self.0.name
    }

    /// The unit.
    pub fn unit(&self) -> Unit {
        self.0.unit
    }

    /// Whether a sample was ever recorded.
    pub fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

/// Every stat, by full name. Asking twice for the same name gives the same stat, so each
/// worker can ask for its own handles.
#[derive(Default)]
pub struct Store {
    inner: Mutex<Registry>,
    /// `stats_config`'s tag rules, set once at start (none: Envoy's own tags only).
    tag_rules: OnceLock<TagRules>,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<String, Counter>,
    gauges: BTreeMap<String, Gauge>,
    histograms: BTreeMap<String, Histogram>,
    text_readouts: BTreeMap<String, TextReadout>,
}

/// A point-in-time copy of the registry's handles, sorted by name.
pub struct Snapshot {
    /// The counters.
    pub counters: Vec<Counter>,
    /// The gauges.
    pub gauges: Vec<Gauge>,
    /// The histograms.
    pub histograms: Vec<Histogram>,
    /// The text readouts.
    pub text_readouts: Vec<TextReadout>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Arc<Store> {
        Arc::new(Store::default())
    }

    /// Sets the tag rules of `stats_config`, for every stat made from now on; `false` if
    /// they were set already (they cannot change while the process runs, as in Envoy).
    pub fn set_tag_rules(&self, rules: TagRules) -> bool {
        self.tag_rules.set(rules).is_ok()
    }

    /// A new stat's name under the tag rules.
    fn tagged(&self, name: StatName) -> StatName {
        match self.tag_rules.get() {
            Some(rules) => rules.apply(name),
            None => name,
        }
    }

    /// The counter of that name, created at 0 on first use.
    pub fn counter(&self, name: StatName) -> Counter {
        let mut r = lock(&self.inner);
        r.counters
            .entry(name.name.clone())
            .or_insert_with(|| {
                let name = self.tagged(name);
                Counter(Arc::new(CounterCells { name, cells: Default::default(), used: AtomicBool::new(false) }))
            })
            .clone()
    }

    /// The gauge of that name, created at 0 on first use.
    pub fn gauge(&self, name: StatName) -> Gauge {
        let mut r = lock(&self.inner);
        r.gauges
            .entry(name.name.clone())
            .or_insert_with(|| {
                let name = self.tagged(name);
                Gauge(Arc::new(GaugeCell { name, value: AtomicU64::new(0), used: AtomicBool::new(false) }))
            })
            .clone()
    }

    /// The histogram of that name, created empty on first use.
    pub fn histogram(&self, name: StatName, unit: Unit) -> Histogram {
        let mut r = lock(&self.inner);
        r.histograms
            .entry(name.name.clone())
            .or_insert_with(|| {
                Histogram(Arc::new(HistogramCells {
                    name: self.tagged(name),
                    unit,
                    cells: Default::default(),
                    flushed: Mutex::default(),
                    used: AtomicBool::new(false),
                }))
            })
            .clone()
    }

    /// The text readout of that name, created empty on first use.
    pub fn text_readout(&self, name: StatName) -> TextReadout {
        let mut r = lock(&self.inner);
        r.text_readouts
            .entry(name.name.clone())
            .or_insert_with(|| {
                let name = self.tagged(name);
                TextReadout(Arc::new(TextCell { name, value: Mutex::default(), used: AtomicBool::new(false) }))
            })
            .clone()
    }

    /// Flushes every histogram (Envoy's stats flush).
    pub fn flush(&self) {
        for h in self.snapshot().histograms {
            h.flush();
        }
    }

    /// Every stat, sorted by name.
    pub fn snapshot(&self) -> Snapshot {
        let r = lock(&self.inner);
        Snapshot {
            counters: r.counters.values().cloned().collect(),
            gauges: r.gauges.values().cloned().collect(),
            histograms: r.histograms.values().cloned().collect(),
            text_readouts: r.text_readouts.values().cloned().collect(),
        }
    }
}

/// A name prefix with its tags: `Scope::new("cluster.backend.", "cluster.", [("envoy_cluster_name", "backend")])`
/// makes `cluster.backend.upstream_rq_total` tagged as Envoy's extractors tag it.
#[derive(Clone)]
pub struct Scope {
    store: Arc<Store>,
    prefix: String,
    extracted_prefix: String,
    tags: Vec<(String, String)>,
}

impl Scope {
    /// A scope of `store`.
    pub fn new(store: &Arc<Store>, prefix: &str, extracted_prefix: &str, tags: &[(&str, &str)]) -> Scope {
        Scope {
            store: store.clone(),
            prefix: prefix.to_string(),
            extracted_prefix: extracted_prefix.to_string(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The name of `suffix` in this scope.
    pub fn name(&self, suffix: &str) -> StatName {
        StatName {
            name: format!("{}{suffix}", self.prefix),
            tag_extracted: format!("{}{suffix}", self.extracted_prefix),
            tags: self.tags.clone(),
        }
    }

    /// The name of `suffix`, whose tag-extracted form is `extracted` with `tag` first.
    pub fn tagged_name(&self, suffix: &str, extracted: &str, tag: (&str, &str)) -> StatName {
        let mut tags = vec![(tag.0.to_string(), tag.1.to_string())];
        tags.extend(self.tags.iter().cloned());
        StatName {
            name: format!("{}{suffix}", self.prefix),
            tag_extracted: format!("{}{extracted}", self.extracted_prefix),
            tags,
        }
    }

    /// A counter of this scope.
    pub fn counter(&self, suffix: &str) -> Counter {
        self.store.counter(self.name(suffix))
    }

    /// A gauge of this scope.
    pub fn gauge(&self, suffix: &str) -> Gauge {
        self.store.gauge(self.name(suffix))
    }

    /// A histogram of this scope.
    pub fn histogram(&self, suffix: &str, unit: Unit) -> Histogram {
        self.store.histogram(self.name(suffix), unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_fold_the_cells_of_every_thread() {
        let store = Store::new();
        let c = store.counter(StatName::plain("a"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = store.counter(StatName::plain("a"));
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(c.value(), 4000);
        assert!(c.used());
        assert!(!store.counter(StatName::plain("b")).used());
    }

    #[test]
    fn histograms_show_only_flushed_samples() {
        let store = Store::new();
        let h = store.histogram(StatName::plain("h"), Unit::Milliseconds);
        h.record(10);
        assert!(h.flushed().cumulative.is_empty());
        store.flush();
        assert_eq!(h.flushed().interval.count(), 1);
        h.record(20);
        store.flush();
        let f = h.flushed();
        assert_eq!((f.interval.count(), f.cumulative.count()), (1, 2));
        store.flush();
        assert_eq!((h.flushed().interval.count(), h.flushed().cumulative.count()), (0, 2));
    }
}
