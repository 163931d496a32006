//! A configured Wasm plugin as the host takes it: its VM and plugin configuration.

use wasmproxy_config::model::WasmPlugin;
use wasmproxy_host::{PluginConfig, VmConfig};

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
