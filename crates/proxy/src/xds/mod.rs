//! xDS: gRPC streams to control planes, the aggregated one (ADS) and one per type of each
//! `api_config_source`, and the fetches of modules by URL. They run on a thread of their own
//! (`client`), each stream through a static cluster's connections; each response is handed to the configuration thread as an
//! [`Update`], which reads it with the same reader as a file and answers whether it was
//! taken, and what the configuration now wants from each stream; the stream then ACKs or
//! NACKs it.

mod client;
mod wire;

use std::collections::{BTreeMap, BTreeSet};

use wasmproxy_config::WireResource;
use wasmproxy_config::model::ApiConfigSource;

pub use client::{XdsSetup, spawn};

/// A type of resource the ADS stream carries, in the order Envoy asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// CDS.
    Cluster,
    /// EDS.
    Endpoint,
    /// LDS.
    Listener,
    /// RDS.
    Route,
    /// ECDS: filter configurations.
    Extension,
}

impl Kind {
    /// Every kind, in the order a new stream asks for them.
    pub const ALL: [Kind; 5] = [Kind::Cluster, Kind::Endpoint, Kind::Listener, Kind::Route, Kind::Extension];

    /// Its type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Kind::Extension => "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        }
    }

    /// The kind of a type URL.
    pub fn of_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Whether the control plane sends every resource of the kind (LDS, CDS) rather than
    /// those named.
    pub fn wildcard(self) -> bool {
        matches!(self, Kind::Cluster | Kind::Listener)
    }

    /// The service and method of a stream of this kind alone (`api_config_source`).
    pub fn service(self, delta: bool) -> (&'static str, &'static str) {
        let (service, sotw, incremental) = match self {
            Kind::Cluster => ("envoy.service.cluster.v3.ClusterDiscoveryService", "StreamClusters", "DeltaClusters"),
            Kind::Endpoint => {
                ("envoy.service.endpoint.v3.EndpointDiscoveryService", "StreamEndpoints", "DeltaEndpoints")
            }
            Kind::Listener => {
                ("envoy.service.listener.v3.ListenerDiscoveryService", "StreamListeners", "DeltaListeners")
            }
            Kind::Route => ("envoy.service.route.v3.RouteDiscoveryService", "StreamRoutes", "DeltaRoutes"),
            Kind::Extension => (
                "envoy.service.extension.v3.ExtensionConfigDiscoveryService",
                "StreamExtensionConfigs",
                "DeltaExtensionConfigs",
            ),
        };
        (service, if delta { incremental } else { sotw })
    }

    /// "cds", "eds", "lds" or "rds", in logs.
    pub fn api(self) -> &'static str {
        match self {
            Kind::Cluster => "cds",
            Kind::Endpoint => "eds",
            Kind::Listener => "lds",
            Kind::Route => "rds",
            Kind::Extension => "ecds",
        }
    }
}

/// A stream to a control plane.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StreamKey {
    /// The aggregated stream of `ads_config`.
    Ads,
    /// A stream of its own for one type, to an `api_config_source`.
    Api(ApiConfigSource, Kind),
}

impl StreamKey {
    /// The stream a source's resources of `kind` come on (none for a file).
    pub fn of(source: &wasmproxy_config::model::ConfigSource, kind: Kind) -> Option<StreamKey> {
        use wasmproxy_config::model::ConfigSource;
        match source {
            ConfigSource::Ads { .. } => Some(StreamKey::Ads),
            ConfigSource::Grpc { api, .. } => Some(StreamKey::Api(api.clone(), kind)),
            ConfigSource::File(_) => None,
        }
    }
}

/// What the xDS thread tells the configuration thread.
pub enum Event {
    /// A response to read and, if good, apply.
    Update(Update),
    /// The stream failed or ended; it is tried again after a back-off.
    Disconnected(StreamKey),
    /// A module by URL was fetched (and its sha256 checked), or could not be.
    Fetched {
        /// The sha256 it was asked for by.
        sha256: String,
        /// The module, or why there is none.
        result: Result<Vec<u8>, String>,
    },
}

/// A module to fetch (`code.remote`), through that cluster or from its OCI registry.
pub struct Fetch {
    /// Where, and its sha256.
    pub code: wasmproxy_config::model::RemoteCode,
    /// The cluster `http_uri` names, as configured now (`None` for an `oci://` module).
    pub cluster: Option<wasmproxy_config::model::Cluster>,
}

/// A response's resources, and where to answer.
pub struct Update {
    /// Their type.
    pub kind: Kind,
    /// `version_info`.
    pub version_info: String,
    /// The resources: every one of an LDS or CDS response, those named for RDS and EDS.
    pub resources: Vec<WireResource>,
    /// Whether the answer was taken, and what the configuration wants now.
    pub reply: tokio::sync::oneshot::Sender<Reply>,
}

/// The configuration thread's answer to an [`Update`].
pub struct Reply {
    /// `Ok`, or why the update was rejected (the NACK's message).
    pub result: Result<(), String>,
    /// What the configuration wants from each stream now.
    pub wanted: Subscriptions,
}

/// What the configuration wants from one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Every cluster (CDS).
    pub clusters: bool,
    /// Every listener (LDS).
    pub listeners: bool,
    /// Route configurations, by name.
    pub routes: BTreeSet<String>,
    /// Endpoints, by cluster (service) name.
    pub endpoints: BTreeSet<String>,
    /// Filter configurations (ECDS), by name.
    pub extensions: BTreeSet<String>,
}

/// What the configuration wants from each stream.
pub type Subscriptions = BTreeMap<StreamKey, Wanted>;
