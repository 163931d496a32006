//! `load_assignment` and EDS `ClusterLoadAssignment`s: each endpoint with its address,
//! weight, health as reported, health check settings, locality and priority.

use crate::address::{Host, read_address};
use crate::model::{EdsHealth, Endpoint, LoadAssignment, Locality};
use crate::reader::{Ctx, Field, Msg};

const CLUSTER_LOAD_ASSIGNMENT: &[&str] = &["cluster_name", "endpoints", "named_endpoints", "policy"];
const POLICY: &[&str] =
    &["drop_overloads", "overprovisioning_factor", "endpoint_stale_after", "weighted_priority_health"];
const LOCALITY_LB_ENDPOINTS: &[&str] = &[
    "locality",
    "metadata",
    "lb_endpoints",
    "load_balancer_endpoints",
    "leds_cluster_locality_config",
    "load_balancing_weight",
    "priority",
    "proximity",
];
const LOCALITY: &[&str] = &["region", "zone", "sub_zone"];
const LB_ENDPOINT: &[&str] = &["endpoint", "endpoint_name", "health_status", "metadata", "load_balancing_weight"];
const ENDPOINT: &[&str] = &["address", "health_check_config", "hostname", "additional_addresses"];
const HEALTH_CHECK_CONFIG: &[&str] = &["port_value", "hostname", "address", "disable_active_health_check"];
const HEALTH_STATUS: &[(&str, i64, Option<EdsHealth>)] = &[
    ("UNKNOWN", 0, Some(EdsHealth::Unknown)),
    ("HEALTHY", 1, Some(EdsHealth::Healthy)),
    ("UNHEALTHY", 2, Some(EdsHealth::Unhealthy)),
    ("DRAINING", 3, Some(EdsHealth::Unhealthy)),
    ("TIMEOUT", 4, Some(EdsHealth::Unhealthy)),
    ("DEGRADED", 5, Some(EdsHealth::Degraded)),
];
/// Envoy's highest `priority`.
const MAX_PRIORITY: u64 = 128;

/// A `ClusterLoadAssignment` of an EDS file.
pub(crate) fn read_cluster_load_assignment(ctx: &mut Ctx, field: &Field<'_>) -> Option<LoadAssignment> {
    let cluster_name = field.node.as_map().and_then(|entries| {
        let entry = entries.iter().find(|e| e.key == "cluster_name" || e.key == "clusterName")?;
        Field::new(&entry.value, crate::reader::child(&field.path, &entry.key)).string(ctx)
    });
    let Some(cluster_name) = cluster_name.filter(|n| !n.is_empty()) else {
        field.error(ctx, "missing required field \"cluster_name\"");
        return None;
    };
    Some(LoadAssignment { cluster_name, endpoints: read_load_assignment(ctx, field, Host::Ip) })
}

/// `load_assignment`: every `endpoints[].lb_endpoints[]`, in order.
pub(crate) fn read_load_assignment(ctx: &mut Ctx, field: &Field<'_>, host: Host) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    let Some(mut msg) = field.message(ctx, CLUSTER_LOAD_ASSIGNMENT) else { return endpoints };
    // Informational: the cluster's own name is what counts.
    msg.ignore(ctx, "cluster_name");
    if let Some(policy) = msg.get(ctx, "policy")
        && let Some(policy) = policy.message(ctx, POLICY)
    {
        policy.finish(ctx);
    }
    for locality in msg.get(ctx, "endpoints").map(|f| f.list()).unwrap_or_default() {
        let Some(mut locality_msg) = locality.message(ctx, LOCALITY_LB_ENDPOINTS) else { continue };
        let place = read_locality(ctx, &mut locality_msg);
        for lb_endpoint in locality_msg.get(ctx, "lb_endpoints").map(|f| f.list()).unwrap_or_default() {
            if let Some(mut endpoint) = read_lb_endpoint(ctx, &lb_endpoint, host) {
                (endpoint.locality, endpoint.locality_weight, endpoint.priority) = place.clone();
                endpoints.push(endpoint);
            }
        }
        locality_msg.finish(ctx);
    }
    msg.finish(ctx);
    endpoints
}

/// A `LocalityLbEndpoints`' locality, weight (0 if unset) and priority.
fn read_locality(ctx: &mut Ctx, msg: &mut Msg<'_>) -> (Locality, u32, u32) {
    let mut locality = Locality::default();
    if let Some(f) = msg.get(ctx, "locality")
        && let Some(mut m) = f.message(ctx, LOCALITY)
    {
        let mut read = |m: &mut Msg<'_>, name: &str| m.get(ctx, name).and_then(|f| f.string(ctx)).unwrap_or_default();
        locality =
            Locality { region: read(&mut m, "region"), zone: read(&mut m, "zone"), sub_zone: read(&mut m, "sub_zone") };
        m.finish(ctx);
    }
    let weight = msg.get(ctx, "load_balancing_weight").and_then(|f| positive(ctx, &f)).unwrap_or(0);
    let priority = msg.get(ctx, "priority").and_then(|f| f.unsigned(ctx, MAX_PRIORITY)).unwrap_or(0) as u32;
    (locality, weight, priority)
}

/// One `lb_endpoints[]` entry.
fn read_lb_endpoint(ctx: &mut Ctx, field: &Field<'_>, host: Host) -> Option<Endpoint> {
    let mut msg = field.message(ctx, LB_ENDPOINT)?;
    let weight = msg.get(ctx, "load_balancing_weight").and_then(|f| positive(ctx, &f)).unwrap_or(1);
    let health_status =
        msg.get(ctx, "health_status").and_then(|f| f.enumeration(ctx, HEALTH_STATUS)).unwrap_or_default();
    let mut endpoint = None;
    if let Some(f) = msg.required(ctx, "endpoint")
        && let Some(mut endpoint_msg) = f.message(ctx, ENDPOINT)
    {
        let address = endpoint_msg.required(ctx, "address").and_then(|f| read_address(ctx, &f, host));
        let hostname = endpoint_msg.get(ctx, "hostname").and_then(|f| f.string(ctx)).unwrap_or_default();
        let (mut health_check_port, mut health_check_hostname) = (None, String::new());
        if let Some(f) = endpoint_msg.get(ctx, "health_check_config")
            && let Some(mut m) = f.message(ctx, HEALTH_CHECK_CONFIG)
        {
            health_check_port = m.get(ctx, "port_value").and_then(|f| f.port(ctx)).filter(|p| *p != 0);
            health_check_hostname = m.get(ctx, "hostname").and_then(|f| f.string(ctx)).unwrap_or_default();
            m.finish(ctx);
        }
        endpoint_msg.finish(ctx);
        endpoint = address.map(|address| Endpoint {
            hostname,
            weight,
            health_status,
            health_check_port,
            health_check_hostname,
            ..Endpoint::at(address)
        });
    }
    msg.finish(ctx);
    endpoint
}

/// A `load_balancing_weight`: at least 1.
fn positive(ctx: &mut Ctx, field: &Field<'_>) -> Option<u32> {
    let value = field.unsigned(ctx, u64::from(u32::MAX))?;
    if value == 0 {
        field.error(ctx, "must be at least 1");
        return None;
    }
    Some(value as u32)
}
