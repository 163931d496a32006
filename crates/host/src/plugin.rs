//! What a plugin and its VM are configured with (Envoy's `PluginConfig` and `VmConfig`).

/// The VM part: shared by every plugin with the same `vm_id`, configuration and code.
#[derive(Debug, Clone, Default)]
pub struct VmConfig {
    /// `vm_config.vm_id`: shared data and queues are keyed by it.
    pub vm_id: String,
    /// `vm_config.configuration`, as the plugin reads it from buffer 6.
    pub configuration: Vec<u8>,
    /// The environment variables the plugin sees through WASI (`environment_variables`).
    pub environment: Vec<(String, String)>,
}

/// The plugin part: one root context per plugin in each VM.
#[derive(Debug, Clone, Default)]
pub struct PluginConfig {
    /// `name`: shown in log lines and the `plugin_name` property.
    pub name: String,
    /// `root_id`: picks the root context inside the module.
    pub root_id: String,
    /// `configuration`, as the plugin reads it from buffer 7 in `on_configure`.
    pub configuration: Vec<u8>,
    /// `allow_on_headers_stop_iteration`: keep a header `Pause` as StopIteration.
    pub allow_on_headers_stop_iteration: bool,
}

impl PluginConfig {
    /// How messages name the plugin: `"name"`, else `root_id "id"`, else `(unnamed)`.
    pub fn display_name(&self) -> String {
        if !self.name.is_empty() {
            format!("{:?}", self.name)
        } else if !self.root_id.is_empty() {
            format!("with root_id {:?}", self.root_id)
        } else {
            "(unnamed)".to_string()
        }
    }

    /// Envoy's log prefix for stream contexts: `" <name> <root_id> <vm_id>"`, each part only if set.
    pub fn log_prefix(&self, vm_id: &str) -> String {
        join_prefix(&[&self.name, &self.root_id, vm_id])
    }

    /// Envoy's log prefix for the root context: `" <root_id> <vm_id>"` (no plugin name).
    pub fn root_log_prefix(&self, vm_id: &str) -> String {
        join_prefix(&[&self.root_id, vm_id])
    }
}

fn join_prefix(parts: &[&str]) -> String {
    let mut prefix = String::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        prefix.push(' ');
        prefix.push_str(part);
    }
    prefix
}
