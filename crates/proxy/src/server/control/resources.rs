//! The resources taken by kind: listeners and clusters (files or LDS and CDS), and those
//! asked for by name (routes, endpoints, filter configurations).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use wasmproxy_config::model::{Cluster, ExtensionConfig, Listener, LoadAssignment, ResourceFile, RouteConfig};
use wasmproxy_config::{ResourceFileError, ResourceSource};
use wasmproxy_stats::StatName;

use super::Control;
use crate::admin::Accepted;
use crate::observe::stats::SubscriptionStats;
use crate::xds::Wanted;

/// What the LDS and CDS files hold, and where [`Control`] keeps each.
pub(super) trait DynamicResource: Sized {
    /// "lds" or "cds", in logs.
    const API: &'static str;
    /// Reads the resources; a listener may route to the `clusters` named.
    fn load(source: ResourceSource<'_>, clusters: &[String]) -> Result<ResourceFile<Self>, ResourceFileError>;
    /// The file last taken, the text last tried, and the subscription's stats.
    fn parts(control: &mut Control) -> (&mut Option<ResourceFile<Self>>, &mut Option<String>, &SubscriptionStats);
    /// Why a file that reads well cannot be taken, if it cannot.
    fn clash(control: &Control, file: &ResourceFile<Self>) -> Option<String>;
}

impl DynamicResource for Listener {
    const API: &'static str = "lds";

    fn load(source: ResourceSource<'_>, clusters: &[String]) -> Result<ResourceFile<Self>, ResourceFileError> {
        wasmproxy_config::load_listeners(source, Path::new(""), clusters)
    }

    fn parts(control: &mut Control) -> (&mut Option<ResourceFile<Self>>, &mut Option<String>, &SubscriptionStats) {
        (&mut control.listeners, &mut control.last_lds_text, &control.stats.lds)
    }

    fn clash(control: &Control, file: &ResourceFile<Self>) -> Option<String> {
        let clash = file.resources.iter().find(|l| control.bootstrap.listeners.iter().any(|s| s.name == l.name))?;
        Some(format!("listener {:?} is a static listener", clash.name))
    }
}

impl DynamicResource for Cluster {
    const API: &'static str = "cds";

    fn load(source: ResourceSource<'_>, _clusters: &[String]) -> Result<ResourceFile<Self>, ResourceFileError> {
        wasmproxy_config::load_clusters(source, Path::new(""))
    }

    fn parts(control: &mut Control) -> (&mut Option<ResourceFile<Self>>, &mut Option<String>, &SubscriptionStats) {
        (&mut control.clusters, &mut control.last_cds_text, &control.stats.cds)
    }

    /// A dynamic cluster named as a static one is left out (see `all_clusters`), not refused.
    fn clash(_control: &Control, _file: &ResourceFile<Self>) -> Option<String> {
        None
    }
}

/// What RDS and EDS bring from ADS, and where [`Control`] keeps each.
pub(super) trait NamedResource: Sized + Clone {
    /// Reads the resources.
    fn load(source: ResourceSource<'_>) -> Result<ResourceFile<Self>, ResourceFileError>;
    /// The name it is asked for by.
    fn name(&self) -> &str;
    /// The names of this kind the configuration wants.
    fn wanted(wanted: &Wanted) -> &BTreeSet<String>;
    /// The update stats of the subscribers to those names (in one response).
    fn stats(control: &Control, names: &[String]) -> Vec<SubscriptionStats>;
    /// Why the configuration cannot take this resource, if it cannot (checked before it is
    /// applied).
    fn refused(_control: &Control, _resource: &Self) -> Option<String> {
        None
    }
    /// What was taken.
    fn held(control: &mut Control) -> &mut Vec<Self>;
    /// Counts what became of a resource of that name, beyond the subscription stats.
    fn counted(_control: &Control, _name: &str, _outcome: Outcome) {}
    /// What admin shows of them, if it shows them (`/config_dump`).
    fn shown(_control: &mut Control) -> Option<&mut BTreeMap<String, Accepted>> {
        None
    }
}

impl NamedResource for RouteConfig {
    fn load(source: ResourceSource<'_>) -> Result<ResourceFile<Self>, ResourceFileError> {
        wasmproxy_config::load_routes(source)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn wanted(wanted: &Wanted) -> &BTreeSet<String> {
        &wanted.routes
    }

    fn stats(control: &Control, names: &[String]) -> Vec<SubscriptionStats> {
        names.iter().flat_map(|n| control.rds_stats(n)).collect()
    }

    fn held(control: &mut Control) -> &mut Vec<Self> {
        &mut control.ads_routes
    }

    fn shown(control: &mut Control) -> Option<&mut BTreeMap<String, Accepted>> {
        Some(&mut control.shown_routes)
    }
}

impl NamedResource for LoadAssignment {
    fn load(source: ResourceSource<'_>) -> Result<ResourceFile<Self>, ResourceFileError> {
        wasmproxy_config::load_endpoints(source)
    }

    fn name(&self) -> &str {
        &self.cluster_name
    }

    fn wanted(wanted: &Wanted) -> &BTreeSet<String> {
        &wanted.endpoints
    }

    fn stats(control: &Control, names: &[String]) -> Vec<SubscriptionStats> {
        control.eds_stats(names)
    }

    fn held(control: &mut Control) -> &mut Vec<Self> {
        &mut control.ads_endpoints
    }
}

impl NamedResource for ExtensionConfig {
    fn load(source: ResourceSource<'_>) -> Result<ResourceFile<Self>, ResourceFileError> {
        wasmproxy_config::load_extension_configs(source)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn wanted(wanted: &Wanted) -> &BTreeSet<String> {
        &wanted.extensions
    }

    /// Envoy's ECDS subscription stats: `extension_config_discovery.<http_filter or
    /// network_filter>.<name>.`, of each kind of filter that takes it.
    fn stats(control: &Control, names: &[String]) -> Vec<SubscriptionStats> {
        let prefixes = names.iter().flat_map(|name| {
            let kinds = control.discovering_kinds(name);
            kinds.into_iter().map(move |k| format!("extension_config_discovery.{}.{name}.", k.stats_word()))
        });
        prefixes.map(|p| SubscriptionStats::new(&control.store, &p)).collect()
    }

    /// A configuration of one kind for a filter of another is refused, as Envoy refuses a
    /// type its `type_urls` do not name.
    fn refused(control: &Control, resource: &Self) -> Option<String> {
        let kinds = control.discovering_kinds(&resource.name);
        let wanted = kinds.iter().find(|k| **k != resource.kind)?;
        Some(format!(
            "{}: the filter that takes it wants a {}, not a {}",
            resource.name,
            wanted.wasm_type(),
            resource.kind.wasm_type()
        ))
    }

    fn held(control: &mut Control) -> &mut Vec<Self> {
        &mut control.ecds
    }

    fn shown(control: &mut Control) -> Option<&mut BTreeMap<String, Accepted>> {
        Some(&mut control.shown_filters)
    }

    /// Envoy's `config_reload` (every configuration tried, as Envoy 1.40 counts it, so
    /// those the configuration refused too) and `config_fail` (those not taken).
    fn counted(control: &Control, name: &str, outcome: Outcome) {
        for kind in control.discovering_kinds(name) {
            let count = |counter: &str| {
                let stat = format!("extension_config_discovery.{}.{name}.{counter}", kind.stats_word());
                control.store.counter(StatName::plain(stat)).inc();
            };
            if outcome != Outcome::Refused {
                count("config_reload");
            }
            if outcome != Outcome::Applied {
                count("config_fail");
            }
        }
    }
}

/// What became of a resource received by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Served.
    Applied,
    /// The configuration it made could not be served.
    NotApplied,
    /// Refused before it was tried (of the wrong kind).
    Refused,
}
