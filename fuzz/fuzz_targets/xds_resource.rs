//! xDS resources on arbitrary bytes: the first byte picks the type (listener, cluster,
//! route configuration, endpoints), the rest is the `Any`'s value in protobuf wire format.
//! An answer or errors naming where they are, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmproxy_config::{ResourceSource, WireResource};

const TYPES: [&str; 4] = [
    "envoy.config.listener.v3.Listener",
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else { return };
    let kind = usize::from(pick) % TYPES.len();
    let resources = [WireResource { type_url: format!("type.googleapis.com/{}", TYPES[kind]), value: value.to_vec() }];
    let source = ResourceSource::Wire { version_info: "1", resources: &resources };
    let error = match kind {
        0 => wasmproxy_config::load_listeners(source, std::path::Path::new("/nonexistent"), &[]).err(),
        1 => wasmproxy_config::load_clusters(source, std::path::Path::new("/nonexistent")).err(),
        2 => wasmproxy_config::load_routes(source).err(),
        _ => wasmproxy_config::load_endpoints(source).err(),
    };
    if let Some(error) = error {
        assert!(error.to_string().contains("resources[0]"), "{error}");
    }
});
