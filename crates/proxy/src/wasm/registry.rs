//! The plugins of one worker, by identity: one VM per VM key, one root context per plugin.
//! A new configuration of a plugin whose VM is unchanged is a new root context in the same
//! VM, as in Envoy; a new module is a new VM. What no configuration uses any more goes once
//! the streams still on it end.

use std::cell::RefCell;
use std::rc::Rc;

use crate::stream_info::node::NodeAttributes;
use crate::upstream::cluster::Clusters;
use crate::wasm::http_filter::FilterSlot;
use crate::wasm::instance::{PluginInstance, VmCell, VmHome};
use crate::wasm::plugin::{LoadedPlugin, VmKey};

/// One worker's VMs and plugins.
pub struct Registry {
    clusters: Rc<Clusters>,
    node: Rc<NodeAttributes>,
    home: VmHome,
    vms: Vec<(VmKey, VmCell)>,
    plugins: Vec<(LoadedPlugin, Rc<FilterSlot>)>,
}

impl Registry {
    /// An empty registry; VMs it starts call out to `clusters`, read `node`, report to
    /// `home`, and run under its rules.
    pub fn new(clusters: Rc<Clusters>, node: Rc<NodeAttributes>, home: VmHome) -> Self {
        Registry { clusters, node, home, vms: Vec::new(), plugins: Vec::new() }
    }

    /// The plugin's root context on this worker, made (in its VM, started if need be) the
    /// first time the plugin is asked for.
    pub fn plugin(&mut self, loaded: &LoadedPlugin) -> Result<Rc<FilterSlot>, String> {
        if let Some((_, slot)) = self.plugins.iter().find(|(p, _)| p.same_as(loaded)) {
            return Ok(slot.clone());
        }
        let key = loaded.vm_key();
        let cell = match self.vms.iter().find(|(k, _)| *k == key) {
            Some((_, cell)) => cell.clone(),
            None => {
                // Optimized code, if it is ready by now.
                let module = loaded.module.optimized().unwrap_or_else(|| loaded.module.clone());
                let vm = PluginInstance::start(
                    &module,
                    &loaded.plugin,
                    self.clusters.clone(),
                    self.node.clone(),
                    &self.home,
                )
                .map_err(|e| e.to_string())?;
                let cell = Rc::new(RefCell::new(vm));
                self.vms.push((key, cell.clone()));
                cell
            }
        };
        let index = cell.borrow().add_plugin(&loaded.plugin).map_err(|e| e.to_string())?;
        let policy = self.home.rules.recycling.policy(&loaded.plugin.name);
        let slot = Rc::new(FilterSlot::new(cell, index, &loaded.plugin, &self.home.store, policy));
        self.plugins.push((loaded.clone(), slot.clone()));
        Ok(slot)
    }

    /// Moves every VM running the baseline code of the module with this sha256 (hex) to its
    /// optimized code, now ready: new streams start in a new VM with the same plugins,
    /// those running finish where they are.
    pub fn optimize(&mut self, sha256: &str) {
        for (key, cell) in &self.vms {
            let vm = cell.borrow().clone();
            // A failed VM stays as its failure policy leaves it (FAIL_CLOSED: failed).
            if key.sha256() != sha256 || vm.module().is_optimized() || vm.vm.borrow().failure().is_some() {
                continue;
            }
            let Some(module) = vm.module().optimized() else { continue };
            match vm.move_to(&module) {
                Ok(next) => {
                    *cell.borrow_mut() = next;
                    tracing::debug!("Wasm VM {:?} moved to optimized code", key.vm_id());
                }
                Err(e) => tracing::warn!("Wasm VM {:?} stays on baseline code: {e}", key.vm_id()),
            }
        }
    }

    /// Runs every tick period's `proxy_on_tick` now, in each VM (see
    /// [`crate::wasm::instance::PluginInstance::tick_now`]). Returns how many ticked.
    pub fn tick_now(&self) -> usize {
        self.vms.iter().map(|(_, cell)| cell.borrow().clone().tick_now()).sum()
    }

    /// Forgets the plugins not in `used` (and the VMs left without a plugin): each goes
    /// once the last stream or filter chain holding it lets it go.
    pub fn keep_only(&mut self, used: &[LoadedPlugin]) {
        self.plugins.retain(|(p, _)| used.iter().any(|u| u.same_as(p)));
        let plugins = &self.plugins;
        self.vms.retain(|(key, _)| plugins.iter().any(|(p, _)| p.vm_key() == *key));
    }
}
