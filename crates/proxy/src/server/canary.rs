//! Envoy's canary: a plugin's configuration runs once on a throwaway VM on the main thread
//! (`on_vm_start`, `on_configure`) before any worker gets it; a plugin that refuses it
//! stops start-up, or the update that brought it, by name.

use std::sync::Arc;

use wasmproxy_abi::Status;
use wasmproxy_config::model::{Node, WasmPlugin};
use wasmproxy_host::{Embedder, GrpcCallRequest, GrpcStreamRequest, HttpCallRequest, PluginModule, VmError, WasmVm};

use crate::stream_info::node::NodeAttributes;
use crate::wasm::plugin::{plugin_config, vm_config};

/// The canary VM's host: its job is to say whether the configuration is accepted. It
/// answers `xds.node`, which plugins read when they configure, and takes callouts to
/// configured clusters (with Envoy's statuses for the others) without making them: the
/// canary is gone before an answer could come.
struct Canary {
    node: NodeAttributes,
    clusters: Vec<String>,
}

impl Canary {
    fn knows(&self, cluster: &[u8]) -> bool {
        self.clusters.iter().any(|c| c.as_bytes() == cluster)
    }

    /// A gRPC callout's target is a known cluster, by name or inside a `GrpcService`.
    fn knows_grpc(&self, service_config: &[u8]) -> bool {
        self.knows(service_config)
            || self.clusters.iter().any(|c| crate::upstream::grpc::names_cluster(service_config, c))
    }
}

impl Embedder for Canary {
    fn property(&mut self, _context_id: u32, path: &[&[u8]]) -> Result<Vec<u8>, Status> {
        match path {
            [b"xds", b"node", rest @ ..] => self.node.property(rest),
            _ => Err(Status::NotFound),
        }
    }

    fn http_call(&mut self, request: HttpCallRequest) -> Result<(), Status> {
        if self.knows(request.cluster.as_bytes()) { Ok(()) } else { Err(Status::BadArgument) }
    }

    fn grpc_call(&mut self, request: GrpcCallRequest) -> Result<(), Status> {
        if self.knows_grpc(&request.service_config) { Ok(()) } else { Err(Status::ParseFailure) }
    }

    fn grpc_stream(&mut self, request: GrpcStreamRequest) -> Result<(), Status> {
        if self.knows_grpc(&request.service_config) { Ok(()) } else { Err(Status::ParseFailure) }
    }
}

/// Runs `plugin`'s start-up callbacks on a throwaway VM of `module`; `clusters` are the
/// names its callouts may target.
pub fn check(module: &Arc<PluginModule>, plugin: &WasmPlugin, node: &Node, clusters: &[String]) -> Result<(), VmError> {
    let embedder = Box::new(Canary { node: NodeAttributes::new(node), clusters: clusters.to_vec() });
    let mut vm = WasmVm::new(module, vm_config(plugin), embedder)?;
    vm.create_root_context(Arc::new(plugin_config(plugin)))?;
    Ok(())
}
