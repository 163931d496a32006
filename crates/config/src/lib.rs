//! Envoy v3 bootstrap files (YAML or JSON) read into the validated [`model`] wasmproxy runs.
//!
//! Loading happens in three steps: the text is parsed into a generic tree that keeps source
//! positions (`tree`, `json`); a path-tracking reader walks the tree into the model, taking
//! each field Envoy's proto defines by either JSON spelling (`stat_prefix`, `statPrefix`) and
//! reporting every field left over, as "not supported by wasmproxy" when Envoy has it and as
//! "unknown field" when it does not; then cross-references are checked (`validate`). Every
//! error found is returned, each with its field path and, for YAML, its line and column.
//!
//! ```
//! let yaml = r#"
//! static_resources:
//!   listeners:
//!     address: {socket_address: {address: 127.0.0.1, port_value: 0}}
//!     filter_chains:
//!     - filters:
//!       - name: envoy.filters.network.tcp_proxy
//!         typed_config:
//!           "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
//!           stat_prefix: tcp
//!           cluster: backend
//!   clusters:
//!   - name: backend
//!     load_assignment:
//!       endpoints:
//!       - lb_endpoints:
//!         - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9000}}}
//! "#;
//! let bootstrap = wasmproxy_config::load_str(yaml, std::path::Path::new(".")).unwrap();
//! assert_eq!(bootstrap.listeners[0].name, "listener_0");
//! assert_eq!(bootstrap.clusters[0].endpoints[0].address.port, 9000);
//! ```
//!
//! `docs/CONFIG.md` lists every supported field, the fields accepted and ignored, and the warnings.

mod access_log;
mod address;
mod base64;
mod bootstrap;
mod buffer;
mod chain_match;
mod cluster;
mod compressor;
mod config_source;
mod cors;
mod csrf;
mod endpoint;
mod error;
mod ext_authz;
mod fault;
mod filter_override;
pub mod format;
mod hcm;
mod header_mutation;
mod health;
mod health_check_filter;
mod json;
mod listener;
mod load_balancing;
mod local_ratelimit;
mod matcher;
mod metadata;
mod mirror;
pub mod model;
mod protobuf;
mod rate_limit;
mod rbac;
mod reader;
mod resources;
mod retry;
mod route;
mod runtime;
mod services;
pub mod struct_value;
mod tls;
mod tracing;
mod tree;
mod upgrade;
mod validate;
mod wasm;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use protobuf::release_descriptors;
pub use resources::{
    CLUSTER_TYPE, ENDPOINT_TYPE, EXTENSION_CONFIG_TYPE, LISTENER_TYPE, ROUTE_TYPE, ResourceFileError, ResourceSource,
    SECRET_TYPE, WireResource, load_clusters, load_endpoints, load_extension_configs, load_listeners, load_routes,
    load_secret_file,
};

use reader::{Ctx, Field};

/// Loads a bootstrap file. `.json` files are JSON, `.yaml` and `.yml` files YAML; other names are
/// decided by content. Relative Wasm file names resolve against the working directory, as
/// in Envoy.
pub fn load_file(path: &Path) -> Result<Bootstrap, ConfigErrors> {
    load_file_with_warnings(path).map(|(bootstrap, _)| bootstrap)
}

/// [`load_file`], also returning the warnings (fields accepted but deprecated or ignored, and
/// shapes Envoy itself refuses but wasmproxy accepts).
pub fn load_file_with_warnings(path: &Path) -> Result<(Bootstrap, Vec<ConfigError>), ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
    // As in Envoy, a relative file name is the process's: it resolves against the working
    // directory, not the configuration file's.
    load(&text, Path::new(""), Format::of(path))
}

/// Loads a bootstrap from text (YAML, or JSON when it starts with `{` and parses as JSON).
/// Relative Wasm file names resolve against `base_dir`.
pub fn load_str(text: &str, base_dir: &Path) -> Result<Bootstrap, ConfigErrors> {
    load_str_with_warnings(text, base_dir).map(|(bootstrap, _)| bootstrap)
}

/// [`load_str`], also returning the warnings.
pub fn load_str_with_warnings(text: &str, base_dir: &Path) -> Result<(Bootstrap, Vec<ConfigError>), ConfigErrors> {
    load(text, base_dir, Format::Sniff)
}

/// A YAML (or JSON) document of wasmproxy's own, not a bootstrap (`plugin-test` specs), as
/// JSON: plain scalars that read as numbers, booleans or null become those. A syntax error
/// or a duplicate key is an error with its line and column.
pub fn yaml_to_json(text: &str) -> Result<serde_json::Value, ConfigError> {
    let node = tree::parse_yaml(text)?;
    let mut errors = Vec::new();
    tree::duplicate_keys(&node, "", &mut errors);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(node.to_json()),
    }
}

#[derive(Clone, Copy)]
enum Format {
    Yaml,
    Json,
    /// JSON if the text starts with `{` and parses as JSON, else YAML (JSON's error is reported
    /// if neither parses, since the text looked like JSON).
    Sniff,
}

impl Format {
    /// `.json` files are JSON, `.yaml` and `.yml` files YAML; other names are decided by content.
    fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Sniff,
        }
    }
}

fn parse(text: &str, format: Format) -> Result<tree::Node, ConfigError> {
    match format {
        Format::Yaml => tree::parse_yaml(text),
        Format::Json => json::parse_json(text),
        Format::Sniff if text.trim_start().starts_with('{') => {
            json::parse_json(text).or_else(|json_error| tree::parse_yaml(text).map_err(|_| json_error))
        }
        Format::Sniff => tree::parse_yaml(text),
    }
}

fn load(text: &str, base_dir: &Path, format: Format) -> Result<(Bootstrap, Vec<ConfigError>), ConfigErrors> {
    let root = parse(text, format)?;
    let mut ctx = Ctx::new(base_dir.to_path_buf());
    tree::duplicate_keys(&root, "", &mut ctx.errors);
    let mut bootstrap = bootstrap::read_bootstrap(&mut ctx, &Field::new(&root, ""));
    bootstrap.document = root.to_json();
    validate::check_references(&mut ctx);
    if ctx.errors.is_empty() { Ok((bootstrap, ctx.warnings)) } else { Err(ConfigErrors { errors: ctx.errors }) }
}
