//! The process-wide engine: wasmtime settings, the linker, the compiled-module cache.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig};

use crate::error::LoadError;
use crate::shared::{SharedState, lock};
use crate::state::VmState;

/// Engine settings. The defaults suit real plugins; every one can be changed.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most linear memory one VM may have. Growing past it fails the VM.
    pub memory_limit_bytes: usize,
    /// Longest one callback may run before it is interrupted and the VM fails.
    pub callback_deadline: Duration,
    /// How often the epoch advances: the deadline's resolution.
    pub epoch_tick: Duration,
    /// Instances the pooling allocator reserves room for; `None` allocates on demand.
    pub pooling_instances: Option<u32>,
    /// Where compiled modules are cached; `None` for no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// How modules are compiled.
    pub compiler: Compiler,
}

/// How modules are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compiler {
    /// Optimized code (Cranelift) before the module is used.
    #[default]
    Optimizing,
    /// Without optimized code in a cache, baseline code (Winch: several times faster to
    /// compile, slower to run) at once, and optimized code compiled in the background;
    /// [`WasmEngine::on_optimized`] hears when it is ready.
    Tiered,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memory_limit_bytes: 256 << 20,
            callback_deadline: Duration::from_millis(500),
            epoch_tick: Duration::from_millis(5),
            pooling_instances: Some(256),
            cache_dir: None,
            compiler: Compiler::Optimizing,
        }
    }
}

/// One per process: the wasmtime engine, the linker, compiled modules and shared state.
#[derive(Clone)]
pub struct WasmEngine {
    pub(crate) inner: Arc<EngineInner>,
}

/// Told the sha256 (hex) of each module whose optimized code is ready.
pub type OptimizedListener = Arc<dyn Fn(&str) + Send + Sync>;

/// A wasmtime engine with a compiler, and the linker for it.
pub(crate) struct Tier {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<VmState>,
}

/// A compiled module, and whether its code is optimized.
#[derive(Clone)]
pub(crate) struct Compiled {
    pub(crate) module: Module,
    pub(crate) optimized: bool,
}

pub(crate) struct EngineInner {
    /// Cranelift: optimized code.
    pub(crate) optimizing: Tier,
    /// Winch, under [`Compiler::Tiered`].
    pub(crate) baseline: Option<Tier>,
    pub(crate) config: EngineConfig,
    pub(crate) shared: Arc<SharedState>,
    pub(crate) deadline_ticks: u64,
    /// Compiled modules by sha256 of their bytes (baseline code until optimized code replaces it).
    pub(crate) modules: Mutex<HashMap<[u8; 32], Compiled>>,
    pub(crate) listeners: Mutex<Vec<OptimizedListener>>,
    /// How the engine's settings hash, for cache file names.
    pub(crate) compat_hash: u64,
    pub(crate) pooling: bool,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl WasmEngine {
    /// Builds the engine. If the pooling allocator cannot reserve its memory here, falls
    /// back to on-demand allocation (and says so in the log).
    pub fn new(config: EngineConfig) -> Result<Self, LoadError> {
        Self::with_shared(config, SharedState::new())
    }

    /// Builds the engine around existing shared state.
    pub fn with_shared(config: EngineConfig, shared: Arc<SharedState>) -> Result<Self, LoadError> {
        let (engine, pooling) = match config.pooling_instances {
            Some(n) => match Engine::new(&wasmtime_config(&config, Some(n))) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::warn!("pooling allocator unavailable ({e:#}); allocating instances on demand");
                    (build(&config, None)?, false)
                }
            },
            None => (build(&config, None)?, false),
        };
        let optimizing = Tier::new(engine)?;
        let baseline = match config.compiler {
            Compiler::Optimizing => None,
            // On-demand allocation: baseline VMs are few and short-lived.
            Compiler::Tiered => {
                let mut c = wasmtime_config(&config, None);
                c.strategy(wasmtime::Strategy::Winch);
                let engine = Engine::new(&c).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
                Some(Tier::new(engine)?)
            }
        };
        let engine = &optimizing.engine;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat_hash = hasher.finish();
        let tick = config.epoch_tick.max(Duration::from_millis(1));
        let deadline_ticks = (config.callback_deadline.as_nanos() / tick.as_nanos()).max(1) as u64 + 1;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let weak = [Some(&optimizing), baseline.as_ref()].into_iter().flatten().map(|t| t.engine.weak()).collect();
        spawn_epoch_ticker(weak, tick, ticker_stop.clone());
        Ok(WasmEngine {
            inner: Arc::new(EngineInner {
                optimizing,
                baseline,
                config,
                shared,
                deadline_ticks,
                modules: Mutex::new(HashMap::new()),
                listeners: Mutex::new(Vec::new()),
                compat_hash,
                pooling,
                ticker_stop,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The process-wide shared data, queues and metrics.
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.inner.shared
    }

    /// True if instances come from the pooling allocator.
    pub fn is_pooling(&self) -> bool {
        self.inner.pooling
    }

    /// The underlying wasmtime engine (the optimizing one).
    pub fn wasmtime(&self) -> &Engine {
        &self.inner.optimizing.engine
    }

    /// Calls `listener` (on a background thread) with each module whose optimized code is
    /// ready after it was loaded with baseline code ([`Compiler::Tiered`]); see
    /// [`PluginModule::optimized`](crate::PluginModule::optimized).
    pub fn on_optimized(&self, listener: OptimizedListener) {
        lock(&self.inner.listeners).push(listener);
    }

    pub(crate) fn tier(&self, optimized: bool) -> &Tier {
        match (&self.inner.baseline, optimized) {
            (Some(baseline), false) => baseline,
            _ => &self.inner.optimizing,
        }
    }

    pub(crate) fn cached_module(&self, sha: &[u8; 32]) -> Option<Compiled> {
        lock(&self.inner.modules).get(sha).cloned()
    }

    pub(crate) fn remember_module(&self, sha: [u8; 32], compiled: Compiled) {
        lock(&self.inner.modules).insert(sha, compiled);
    }

    /// Records a module's optimized code, compiled in the background, and tells the listeners.
    pub(crate) fn optimized_ready(&self, sha: [u8; 32], module: Module) {
        self.remember_module(sha, Compiled { module, optimized: true });
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        let listeners = lock(&self.inner.listeners).clone();
        for listener in listeners {
            listener(&hex);
        }
    }
}

impl Tier {
    fn new(engine: Engine) -> Result<Tier, LoadError> {
        let mut linker = Linker::new(&engine);
        crate::imports::define_all(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        Ok(Tier { engine, linker })
    }
}

fn build(config: &EngineConfig, pool: Option<u32>) -> Result<Engine, LoadError> {
    Engine::new(&wasmtime_config(config, pool)).map_err(|e| LoadError::Engine(format!("{e:#}")))
}

fn wasmtime_config(config: &EngineConfig, pool: Option<u32>) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    // A module with DWARF gets files and lines in its trap backtraces (one without pays nothing).
    c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some(n) = pool {
        let mut p = PoolingAllocationConfig::default();
        p.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .max_memory_size(config.memory_limit_bytes)
            .table_elements(200_000)
            .max_core_instance_size(4 << 20);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// Advances the engines' epochs every `tick` until they are dropped.
fn spawn_epoch_ticker(engines: Vec<wasmtime::EngineWeak>, tick: Duration, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            for engine in &engines {
                match engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the Wasm epoch thread ({e}): callback deadlines will not fire");
    }
}
