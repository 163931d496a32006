//! xDS: the aggregated discovery stream (ADS) to a control plane over gRPC. The stream
//! runs on a thread of its own (`client`), through a static cluster's connections; each
//! response is handed to the configuration thread as an [`Update`], which reads it with
//! the same reader as a file and answers whether it was taken, and which routes and
//! endpoints the configuration now wants; the stream then ACKs or NACKs it.

mod client;
mod wire;

use std::collections::BTreeSet;

use wasmproxy_config::WireResource;

pub use client::{AdsSetup, spawn};

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
}

impl Kind {
    /// Every kind, in the order a new stream asks for them.
    pub const ALL: [Kind; 4] = [Kind::Cluster, Kind::Endpoint, Kind::Listener, Kind::Route];

    /// Its type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
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

    /// "cds", "eds", "lds" or "rds", in logs.
    pub fn api(self) -> &'static str {
        match self {
            Kind::Cluster => "cds",
            Kind::Endpoint => "eds",
            Kind::Listener => "lds",
            Kind::Route => "rds",
        }
    }
}

/// What the stream tells the configuration thread.
pub enum Event {
    /// A response to read and, if good, apply.
    Update(Update),
    /// The stream is up (the control plane answered).
    Connected,
    /// The stream failed or ended; it is tried again after a back-off.
    Disconnected,
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
    /// The route configurations and endpoints the configuration wants from ADS now.
    pub wanted: Wanted,
}

/// The route configurations (RDS) and endpoints (EDS) wanted, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Route configuration names.
    pub routes: BTreeSet<String>,
    /// Cluster (service) names.
    pub endpoints: BTreeSet<String>,
}

impl Wanted {
    /// The names wanted of a kind that is asked for by name.
    pub fn names(&self, kind: Kind) -> Option<&BTreeSet<String>> {
        match kind {
            Kind::Route => Some(&self.routes),
            Kind::Endpoint => Some(&self.endpoints),
            Kind::Cluster | Kind::Listener => None,
        }
    }
}
