//! Dynamic resources: from files (`path_config_source`, a `DiscoveryResponse` in YAML or
//! JSON holding `version_info` and `resources`, each an `Any` naming its type) or from xDS
//! (the same `Any`s in protobuf wire format, turned into the same tree by `protobuf`), read
//! with the same readers and checks as the bootstrap's `static_resources`.

use std::path::Path;

use crate::cluster::read_cluster;
use crate::endpoint::read_cluster_load_assignment;
use crate::error::{ConfigError, ConfigErrors};
use crate::hcm::read_extension_config;
use crate::listener::read_listener;
use crate::model::{Cluster, ExtensionConfig, Listener, LoadAssignment, ResourceFile, RouteConfig, Secret};
use crate::reader::{Ctx, Field, Origin};
use crate::route::read_route_config;
use crate::tls::read_secret;
use crate::tree::{self, Node, Value};

const DISCOVERY_RESPONSE: &[&str] =
    &["version_info", "resources", "canary", "type_url", "nonce", "control_plane", "resource_errors"];

/// The type of listener resources.
pub const LISTENER_TYPE: &str = "envoy.config.listener.v3.Listener";
/// The type of cluster resources.
pub const CLUSTER_TYPE: &str = "envoy.config.cluster.v3.Cluster";
/// The type of route configuration resources.
pub const ROUTE_TYPE: &str = "envoy.config.route.v3.RouteConfiguration";
/// The type of endpoint resources.
pub const ENDPOINT_TYPE: &str = "envoy.config.endpoint.v3.ClusterLoadAssignment";
/// The type of ECDS resources (filter configurations).
pub const EXTENSION_CONFIG_TYPE: &str = "envoy.config.core.v3.TypedExtensionConfig";
/// The type of secret resources.
pub const SECRET_TYPE: &str = "envoy.extensions.transport_sockets.tls.v3.Secret";

/// Where a set of resources comes from.
#[derive(Debug, Clone, Copy)]
pub enum ResourceSource<'a> {
    /// A file, in YAML or JSON.
    File(&'a Path),
    /// A `DiscoveryResponse` from xDS: its version and resources.
    Wire {
        /// `version_info`.
        version_info: &'a str,
        /// The resources, each an `Any`.
        resources: &'a [WireResource],
    },
}

/// A resource as xDS delivers it: an `Any`'s type URL and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireResource {
    /// `type.googleapis.com/<full name>`.
    pub type_url: String,
    /// The message in protobuf wire format.
    pub value: Vec<u8>,
}

/// Why a resource file was not taken, told apart as Envoy's stats tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceFileError {
    /// The file could not be read, or is not YAML or JSON (Envoy's `update_failure`).
    #[error("{0}")]
    Unreadable(ConfigErrors),
    /// It was read, and what it holds is refused (Envoy's `update_rejected`).
    #[error("{0}")]
    Refused(ConfigErrors),
}

/// Reads listeners (LDS). Routes may name the clusters in `clusters` (the static and
/// dynamic clusters known now): a route to another cluster is an error, as Envoy's
/// `validate_clusters` makes it for a route configuration inside a listener. Relative Wasm
/// file names resolve against `base_dir`.
pub fn load_listeners(
    source: ResourceSource<'_>,
    base_dir: &Path,
    clusters: &[String],
) -> Result<ResourceFile<Listener>, ResourceFileError> {
    let known = clusters.iter().map(|c| (c.clone(), Origin { path: String::new(), pos: None }));
    let mut ctx = Ctx::new(base_dir.to_path_buf());
    ctx.refs.clusters.extend(known);
    load_resources(source, ctx, LISTENER_TYPE, read_listener)
}

/// Reads clusters (CDS).
pub fn load_clusters(source: ResourceSource<'_>, base_dir: &Path) -> Result<ResourceFile<Cluster>, ResourceFileError> {
    let ctx = Ctx::new(base_dir.to_path_buf());
    load_resources(source, ctx, CLUSTER_TYPE, |ctx, field, _| read_cluster(ctx, field))
}

/// Reads route configurations (RDS). Routes may name clusters that do not exist yet
/// (Envoy's `validate_clusters` is off for RDS): a request to one gets 503.
pub fn load_routes(source: ResourceSource<'_>) -> Result<ResourceFile<RouteConfig>, ResourceFileError> {
    let mut ctx = Ctx::new(std::path::PathBuf::new());
    ctx.refs.clusters_from_files = true;
    load_resources(source, ctx, ROUTE_TYPE, |ctx, field, _| Some(read_route_config(ctx, field)))
}

/// Reads endpoints (EDS).
pub fn load_endpoints(source: ResourceSource<'_>) -> Result<ResourceFile<LoadAssignment>, ResourceFileError> {
    let ctx = Ctx::new(std::path::PathBuf::new());
    load_resources(source, ctx, ENDPOINT_TYPE, |ctx, field, _| read_cluster_load_assignment(ctx, field))
}

/// Reads filter configurations (ECDS): each a Wasm HTTP filter.
pub fn load_extension_configs(source: ResourceSource<'_>) -> Result<ResourceFile<ExtensionConfig>, ResourceFileError> {
    let ctx = Ctx::new(std::path::PathBuf::new());
    load_resources(source, ctx, EXTENSION_CONFIG_TYPE, |ctx, field, _| read_extension_config(ctx, field))
}

/// Reads a secret (SDS) file. Relative file names in it are the process's working
/// directory's, as in Envoy.
pub fn load_secret_file(path: &Path) -> Result<ResourceFile<Secret>, ResourceFileError> {
    let ctx = Ctx::new(std::path::PathBuf::new());
    load_resources(ResourceSource::File(path), ctx, SECRET_TYPE, |ctx, field, _| read_secret(ctx, field))
}

/// The tree of a file, or of a `DiscoveryResponse` from xDS.
fn resource_tree(source: ResourceSource<'_>) -> Result<Node, ResourceFileError> {
    let unreadable = |e: ConfigError| ResourceFileError::Unreadable(e.into());
    let (version_info, resources) = match source {
        ResourceSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| unreadable(ConfigError::new("", format!("cannot read {}: {e}", path.display()))))?;
            return crate::parse(&text, crate::Format::of(path)).map_err(unreadable);
        }
        ResourceSource::Wire { version_info, resources } => (version_info, resources),
    };
    let mut items = Vec::with_capacity(resources.len());
    let mut errors = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        match crate::protobuf::any_to_tree(&r.type_url, &r.value, &format!("resources[{i}]")) {
            Ok(node) => items.push(node),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(ResourceFileError::Refused(ConfigErrors { errors }));
    }
    let entry =
        |key: &str, value: Value| tree::Entry { key: key.into(), key_pos: None, value: Node { value, pos: None } };
    let version = Value::Scalar { text: version_info.to_string(), quoted: true };
    Ok(Node {
        value: Value::Map(vec![entry("version_info", version), entry("resources", Value::Seq(items))]),
        pos: None,
    })
}

fn load_resources<T>(
    source: ResourceSource<'_>,
    mut ctx: Ctx,
    type_name: &str,
    read: impl Fn(&mut Ctx, &Field<'_>, usize) -> Option<T>,
) -> Result<ResourceFile<T>, ResourceFileError> {
    let root = resource_tree(source)?;
    tree::duplicate_keys(&root, "", &mut ctx.errors);
    let mut file = ResourceFile { version_info: String::new(), resources: Vec::new(), documents: Vec::new() };
    let top = Field::new(&root, "");
    if root.value == Value::Null {
        top.error(&mut ctx, "the file is empty: expected `resources`");
    } else if let Some(mut msg) = top.message(&mut ctx, DISCOVERY_RESPONSE) {
        if let Some(f) = msg.get(&mut ctx, "version_info") {
            file.version_info = f.string(&mut ctx).unwrap_or_default();
        }
        if let Some(f) = msg.get(&mut ctx, "type_url")
            && let Some(url) = f.string(&mut ctx)
            && url.rsplit('/').next() != Some(type_name)
        {
            f.error(&mut ctx, format!("expected type.googleapis.com/{type_name}, found {url:?}"));
        }
        for (i, item) in msg.get(&mut ctx, "resources").map(|f| f.list()).unwrap_or_default().iter().enumerate() {
            let Some(any) = item.any(&mut ctx) else { continue };
            if any.type_name != type_name {
                item.error(&mut ctx, format!("expected a {type_name}, found {:?}", any.type_name));
                continue;
            }
            let body = without_type(any.body.node);
            if let Some(resource) = read(&mut ctx, &Field::new(&body, item.path.clone()), i) {
                file.resources.push(resource);
                file.documents.push(item.node.to_json());
            }
        }
        msg.finish(&mut ctx);
    }
    // Static secrets and clusters are the bootstrap's: a name is looked up when the
    // resource is served; so is the ADS stream.
    ctx.refs.secret_refs.clear();
    ctx.refs.static_cluster_refs.clear();
    ctx.refs.ads_configured = true;
    crate::validate::check_references(&mut ctx);
    if ctx.errors.is_empty() { Ok(file) } else { Err(ResourceFileError::Refused(ConfigErrors { errors: ctx.errors })) }
}

/// A resource's mapping without its `"@type"` key, for the resource's own reader.
fn without_type(node: &Node) -> Node {
    let mut node = node.clone();
    if let Value::Map(entries) = &mut node.value {
        entries.retain(|e| e.key != "@type");
    }
    node
}
