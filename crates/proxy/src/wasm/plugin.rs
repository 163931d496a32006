//! A configured Wasm plugin: its compiled module, its identity (the VM it runs in, the
//! plugin it is), and its configuration as the host takes it.

use std::sync::Arc;

use wasmproxy_config::model::{self, WasmCode, WasmPlugin};
use wasmproxy_host::{PluginConfig, PluginModule, VmConfig};

/// Envoy's `VmConfig` as the host takes it.
pub fn vm_config(config: &WasmPlugin) -> VmConfig {
    VmConfig {
        vm_id: config.vm.vm_id.clone(),
        configuration: config.vm.configuration.clone(),
        environment: config.vm.environment.clone(),
    }
}

/// Envoy's `PluginConfig` as the host takes it.
pub fn plugin_config(config: &WasmPlugin) -> PluginConfig {
    PluginConfig {
        name: config.name.clone(),
        root_id: config.root_id.clone(),
        configuration: config.configuration.clone(),
        allow_on_headers_stop_iteration: config.allow_on_headers_stop_iteration,
    }
}

/// A configured plugin with its compiled module.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The plugin's configuration.
    pub plugin: WasmPlugin,
    /// Its module, compiled once per process.
    pub module: Arc<PluginModule>,
}

/// Envoy's VM key: plugins with the same `vm_id`, VM configuration and code share a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmKey {
    vm_id: String,
    configuration: Vec<u8>,
    sha256: String,
}

impl VmKey {
    /// The sha256 of the VM's code, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Its `vm_id`.
    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }
}

impl LoadedPlugin {
    /// The VM it runs in.
    pub fn vm_key(&self) -> VmKey {
        VmKey {
            vm_id: self.plugin.vm.vm_id.clone(),
            configuration: self.plugin.vm.configuration.clone(),
            sha256: self.module.sha256_hex(),
        }
    }

    /// Whether `other` is the same plugin: the same VM key and the same plugin configuration
    /// (where its code was read from aside). The same plugin is one root context per worker.
    pub fn same_as(&self, other: &LoadedPlugin) -> bool {
        let without_code = |p: &WasmPlugin| WasmPlugin {
            vm: model::WasmVm { code: WasmCode::Inline(Vec::new()), ..p.vm.clone() },
            ..p.clone()
        };
        self.vm_key() == other.vm_key() && without_code(&self.plugin) == without_code(&other.plugin)
    }
}
