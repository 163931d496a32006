//! The streams to control planes, state of the world or delta, as Envoy speaks them: the
//! ADS stream (CDS first, LDS once the first clusters are in, EDS and RDS for the names the
//! configuration wants) and a stream of its own for each type of each `api_config_source`;
//! every response ACKed once applied, or NACKed with the reason (and, in the state of the
//! world, the last good version); the node on the first request (or on each); on failure, a
//! new stream after a jittered exponential back-off, asking again with the versions held.
//! The thread starts a stream for each source the configuration names, and stops those it
//! names no more; it also fetches the modules the configuration asks for by URL.
//!
//! In the delta protocol the stream keeps every resource it took, by name, and hands the
//! configuration thread the whole set after each change (added and changed ones in, removed
//! ones out), so both protocols are applied the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};
use wasmproxy_config::WireResource;
use wasmproxy_config::model::{ApiConfigSource, Cluster as ClusterConfig};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Gauge, StatName, Store};

use crate::tls::upstream::InlineOnly;
use crate::upstream::cluster::{Cluster, ClusterSnapshot, Clusters};
use crate::upstream::grpc;
use crate::upstream::registry::Upstreams;
use crate::xds::wire::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Status};
use crate::xds::{Event, Fetch, Kind, Reply, StreamKey, Subscriptions, Update};

/// The aggregated discovery service.
const ADS_SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// Envoy's back-off between streams: from 500 ms, doubling, up to 30 s, each wait a random
/// part of that.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The gRPC status a NACK carries (Envoy's: INTERNAL).
const NACK_CODE: i32 = 13;

/// What the streams need.
pub struct XdsSetup {
    /// `ads_config`, if any.
    pub ads: Option<ApiConfigSource>,
    /// The static clusters (the streams go through them).
    pub clusters: Vec<ClusterConfig>,
    /// The node, serialized.
    pub node: Vec<u8>,
    /// What the configuration wants from each stream now.
    pub wanted: Subscriptions,
    /// Stats.
    pub store: Arc<Store>,
    /// Endpoint figures for admin.
    pub upstreams: Arc<Upstreams>,
    /// Where updates go (the configuration thread).
    pub events: Box<dyn Fn(Event) + Send>,
    /// Modules to fetch by URL.
    pub fetches: mpsc::UnboundedReceiver<Fetch>,
    /// Set when the server stops.
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the streams' thread; it runs until the server stops.
pub fn spawn(setup: XdsSetup) -> Result<std::thread::JoinHandle<()>, String> {
    // The thread's own copies of the static clusters. One whose TLS takes secrets is left
    // out (they are served on the main thread): an error if a config source names it now.
    let mut secrets = InlineOnly("the clusters xDS streams go through");
    let named: BTreeSet<&str> = setup
        .ads
        .iter()
        .chain(setup.wanted.keys().filter_map(|key| match key {
            StreamKey::Api(api, _) => Some(api),
            StreamKey::Ads => None,
        }))
        .map(|api| api.cluster.as_str())
        .collect();
    let mut snapshots = Vec::with_capacity(setup.clusters.len());
    for cluster in &setup.clusters {
        match ClusterSnapshot::new(cluster, &mut secrets) {
            Ok(snapshot) => snapshots.push(Arc::new(snapshot)),
            Err(e) if named.contains(cluster.name.as_str()) => return Err(e),
            Err(e) => tracing::debug!("xds: {e}: left out of the xDS thread's clusters"),
        }
    }
    std::thread::Builder::new()
        .name("wasmproxy-xds".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("xds: cannot start: {e}");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, run(setup, snapshots));
        })
        .map_err(|e| format!("cannot start the xDS thread: {e}"))
}

/// What every stream of the thread shares.
struct Shared {
    node: Vec<u8>,
    events: Box<dyn Fn(Event)>,
    /// What the configuration wants from each stream (each reply sets it anew).
    wanted: watch::Sender<Subscriptions>,
    connected: Gauge,
}

/// Starts a stream for each source wanted, and stops each no longer wanted.
async fn run(mut setup: XdsSetup, snapshots: Vec<Arc<ClusterSnapshot>>) {
    let clusters = Clusters::new(&setup.store, &setup.upstreams, false);
    clusters.update(&snapshots).await;
    let (wanted, mut changes) = watch::channel(setup.wanted.clone());
    let connected = setup.store.gauge(StatName::plain("control_plane.connected_state"));
    let shared = Rc::new(Shared { node: setup.node, events: setup.events, wanted, connected });
    let (store, upstreams) = (setup.store.clone(), setup.upstreams.clone());
    let mut shutdown = setup.shutdown.clone();
    let mut running: BTreeMap<StreamKey, tokio::task::AbortHandle> = BTreeMap::new();
    loop {
        let keys: BTreeSet<StreamKey> = changes.borrow_and_update().keys().cloned().collect();
        running.retain(|key, task| {
            let keep = keys.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for key in keys {
            if running.contains_key(&key) {
                continue;
            }
            let api = match &key {
                StreamKey::Ads => setup.ads.clone(),
                StreamKey::Api(api, _) => Some(api.clone()),
            };
            let Some(api) = api else { continue };
            let Some(cluster) = clusters.get(&api.cluster) else {
                tracing::warn!("xds: no static cluster {:?} for a gRPC config source", api.cluster);
                continue;
            };
            let streams = Streams::new(key.clone(), api, &shared);
            let task = tokio::task::spawn_local(streams.run(cluster, setup.shutdown.clone()));
            running.insert(key, task.abort_handle());
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            Some(fetch) = setup.fetches.recv() => {
                let (shared, store, upstreams) = (shared.clone(), store.clone(), upstreams.clone());
                tokio::task::spawn_local(async move {
                    let result = crate::wasm::remote::fetch(&fetch.code, fetch.cluster.as_ref(), &store, &upstreams).await;
                    (shared.events)(Event::Fetched { sha256: fetch.code.sha256, result });
                });
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One type's subscription: what it asks for and what it last took.
struct Subscription {
    kind: Kind,
    /// Whether it is asked for at all (LDS and CDS: configured with `ads`; EDS and RDS: when
    /// names are wanted).
    enabled: bool,
    names: BTreeSet<String>,
    /// The version last accepted.
    version: String,
    /// The nonce of the last response (on this stream).
    nonce: String,
    /// Whether it was asked for on this stream.
    asked: bool,
    /// Whether it was ever asked for on this stream (the first request of a delta stream
    /// names the versions held).
    opened: bool,
    /// Delta: the names asked for on this stream (what a change subscribes or unsubscribes
    /// is told from it).
    asked_names: BTreeSet<String>,
    /// Delta: every resource taken, by name, with its version.
    held: BTreeMap<String, (String, WireResource)>,
}

/// One stream's state across reconnections.
struct Streams {
    key: StreamKey,
    api: ApiConfigSource,
    shared: Rc<Shared>,
    subscriptions: Vec<Subscription>,
    /// Whether the first CDS response came (on ADS, LDS waits for it, as in Envoy).
    clusters_received: bool,
    /// Whether this stream has sent its first request (the node goes on it).
    sent_first: bool,
    out: Option<mpsc::UnboundedSender<Option<Vec<u8>>>>,
}

impl Streams {
    fn new(key: StreamKey, api: ApiConfigSource, shared: &Rc<Shared>) -> Streams {
        let subscription = |kind: Kind| Subscription {
            kind,
            enabled: false,
            names: BTreeSet::new(),
            version: String::new(),
            nonce: String::new(),
            asked: false,
            opened: false,
            asked_names: BTreeSet::new(),
            held: BTreeMap::new(),
        };
        let subscriptions = Kind::ALL.into_iter().map(subscription).collect();
        let mut streams = Streams {
            clusters_received: key != StreamKey::Ads,
            key,
            api,
            shared: shared.clone(),
            subscriptions,
            sent_first: false,
            out: None,
        };
        let wanted = shared.wanted.borrow().clone();
        streams.want(&wanted);
        if streams.key == StreamKey::Ads && !streams.subscription(Kind::Cluster).enabled {
            streams.clusters_received = true;
        }
        streams
    }

    /// Keeps a stream open (a new one after a back-off when one ends) until shutdown.
    async fn run(mut self, cluster: Rc<Cluster>, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let healthy = tokio::select! {
                healthy = self.one_stream(&cluster) => healthy,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            if self.key == StreamKey::Ads {
                self.shared.connected.set(0);
            }
            (self.shared.events)(Event::Disconnected(self.key.clone()));
            failures = if healthy { 0 } else { failures.saturating_add(1) };
            let ceiling = BACKOFF_BASE.saturating_mul(1 << failures.min(6)).min(BACKOFF_MAX);
            let wait = ceiling.mul_f64(crate::random::unit()).max(Duration::from_millis(10));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Runs one stream until it ends; true if a response came on it (the back-off starts
    /// over).
    async fn one_stream(&mut self, cluster: &Rc<Cluster>) -> bool {
        let (out, outgoing) = mpsc::unbounded_channel();
        let (event_tx, mut events) = mpsc::unbounded_channel();
        let sink: grpc::Sink = Rc::new(move |e| {
            let _ = event_tx.send(e);
        });
        let authority = if self.api.authority.is_empty() { &self.api.cluster } else { &self.api.authority };
        let (service, method) = self.method();
        let headers = grpc::request_headers(authority, service, method, &Headers::new(), None);
        tokio::task::spawn_local(grpc::stream(cluster.clone(), headers, outgoing, sink));
        self.out = Some(out);
        self.sent_first = false;
        for s in &mut self.subscriptions {
            s.asked = false;
            s.opened = false;
            s.nonce.clear();
            s.asked_names.clear();
        }
        self.ask_all_due();
        let mut responded = false;
        let mut wanted = self.shared.wanted.subscribe();
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                Ok(()) = wanted.changed() => {
                    let now = wanted.borrow_and_update().clone();
                    self.want(&now);
                    self.ask_all_due();
                    continue;
                }
            };
            let Some(event) = event else { break };
            match event {
                grpc::Event::InitialMetadata(_) => {
                    if self.key == StreamKey::Ads {
                        self.shared.connected.set(1);
                    }
                }
                grpc::Event::Message(bytes) => {
                    responded = true;
                    let taken = if self.api.delta {
                        self.take_delta_response(&bytes).await
                    } else {
                        self.take_response(&bytes).await
                    };
                    if !taken {
                        break;
                    }
                }
                grpc::Event::TrailingMetadata(_) => {}
                grpc::Event::Close(code, message) => {
                    tracing::warn!("xds: stream to {} closed: {code}, {message}", self.api.cluster);
                    break;
                }
            }
        }
        self.out = None;
        responded
    }

    /// Reads a response, hands it to the configuration thread and answers it; false if the
    /// configuration thread is gone.
    async fn take_response(&mut self, bytes: &[u8]) -> bool {
        let Some(response) = decode::<DiscoveryResponse>(bytes) else { return true };
        let Some(kind) = kind_of(&response.type_url) else { return true };
        self.subscription(kind).nonce = response.nonce.clone();
        let result = match crate::xds::wire::resources(response.resources) {
            Ok(resources) => match self.hand_over(kind, &response.version_info, resources).await {
                Some(result) => result,
                None => return false,
            },
            Err(e) => Err(e),
        };
        if result.is_ok() {
            self.subscription(kind).version = response.version_info;
        }
        self.answer(kind, result);
        true
    }

    /// Reads a delta response: its changes to the resources held make the new set, which
    /// the configuration thread takes or not, as a whole.
    async fn take_delta_response(&mut self, bytes: &[u8]) -> bool {
        let Some(response) = decode::<DeltaDiscoveryResponse>(bytes) else { return true };
        let Some(kind) = kind_of(&response.type_url) else { return true };
        let s = self.subscription(kind);
        s.nonce = response.nonce.clone();
        let mut held = s.held.clone();
        for name in &response.removed_resources {
            held.remove(name);
        }
        for r in response.resources {
            // A resource without a body is a heartbeat: what is held stays.
            let Some(any) = r.resource else { continue };
            held.insert(r.name, (r.version, WireResource { type_url: any.type_url, value: any.value }));
        }
        let resources = held.values().map(|(_, r)| r.clone()).collect();
        let Some(result) = self.hand_over(kind, &response.system_version_info, resources).await else { return false };
        if result.is_ok() {
            let s = self.subscription(kind);
            s.held = held;
            s.version = response.system_version_info;
        }
        self.answer(kind, result);
        true
    }

    /// Hands resources to the configuration thread and waits for its answer; `None` if it
    /// is gone.
    async fn hand_over(
        &mut self,
        kind: Kind,
        version: &str,
        resources: Vec<WireResource>,
    ) -> Option<Result<(), String>> {
        let (reply, answer) = oneshot::channel();
        let version_info = version.to_string();
        (self.shared.events)(Event::Update(Update { kind, version_info, resources, reply }));
        let Reply { result, wanted } = answer.await.ok()?;
        self.want(&wanted);
        // The other streams hear of it too.
        self.shared.wanted.send_if_modified(|now| {
            let changed = *now != wanted;
            *now = wanted;
            changed
        });
        Some(result)
    }

    /// ACKs or NACKs a response, then asks for what is due.
    fn answer(&mut self, kind: Kind, result: Result<(), String>) {
        if let Err(e) = &result {
            tracing::warn!("xds: {} update rejected: {e}", kind.api());
        }
        self.send(kind, result.err());
        if kind == Kind::Cluster {
            self.clusters_received = true;
        }
        self.ask_all_due();
    }

    /// The service and method of this stream.
    fn method(&self) -> (&'static str, &'static str) {
        let delta = self.api.delta;
        match &self.key {
            StreamKey::Ads => {
                (ADS_SERVICE, if delta { "DeltaAggregatedResources" } else { "StreamAggregatedResources" })
            }
            StreamKey::Api(_, kind) => kind.service(delta),
        }
    }

    /// Takes what the configuration wants from this stream; a changed subscription is
    /// asked for again.
    fn want(&mut self, all: &Subscriptions) {
        let wanted = all.get(&self.key).cloned().unwrap_or_default();
        for s in &mut self.subscriptions {
            let (enabled, names) = match s.kind {
                Kind::Cluster => (wanted.clusters, BTreeSet::new()),
                Kind::Listener => (wanted.listeners, BTreeSet::new()),
                Kind::Route => (true, wanted.routes.clone()),
                Kind::Endpoint => (true, wanted.endpoints.clone()),
                Kind::Extension => (true, wanted.extensions.clone()),
            };
            if enabled != s.enabled || names != s.names {
                s.enabled = enabled;
                s.names = names;
                s.asked = false;
            }
        }
    }

    /// Asks for every kind that is due.
    fn ask_all_due(&mut self) {
        for kind in Kind::ALL {
            self.ask_if_due(kind);
        }
    }

    /// Asks for a kind not asked for on this stream yet, once it may be.
    fn ask_if_due(&mut self, kind: Kind) {
        let clusters_received = self.clusters_received;
        let s = self.subscription(kind);
        let due = s.enabled
            && !s.asked
            && (kind.wildcard() || !s.names.is_empty())
            && (kind != Kind::Listener || clusters_received);
        if due {
            self.send(kind, None);
        }
    }

    /// Sends the kind's request: an ACK (or first request), or a NACK with `error`. In the
    /// delta protocol it subscribes and unsubscribes what changed since the last, and the
    /// first on a stream names the versions held.
    fn send(&mut self, kind: Kind, error: Option<String>) {
        let node = if !self.sent_first || !self.api.set_node_on_first_message_only {
            self.shared.node.clone()
        } else {
            Vec::new()
        };
        let delta = self.api.delta;
        let s = self.subscription(kind);
        let first_on_stream = !s.opened;
        s.asked = true;
        s.opened = true;
        let error_detail = error.map(|message| Status { code: NACK_CODE, message });
        let request = if delta {
            let subscribe: Vec<String> = s.names.difference(&s.asked_names).cloned().collect();
            let unsubscribe: Vec<String> = s.asked_names.difference(&s.names).cloned().collect();
            s.asked_names = s.names.clone();
            let initial_resource_versions = if first_on_stream {
                s.held.iter().map(|(name, (version, _))| (name.clone(), version.clone())).collect()
            } else {
                Default::default()
            };
            DeltaDiscoveryRequest {
                node,
                type_url: kind.type_url().to_string(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                initial_resource_versions,
                response_nonce: s.nonce.clone(),
                error_detail,
            }
            .encode_to_vec()
        } else {
            DiscoveryRequest {
                version_info: s.version.clone(),
                node,
                resource_names: s.names.iter().cloned().collect(),
                type_url: kind.type_url().to_string(),
                response_nonce: s.nonce.clone(),
                error_detail,
            }
            .encode_to_vec()
        };
        self.sent_first = true;
        if let Some(out) = &self.out {
            let _ = out.send(Some(request));
        }
    }

    fn subscription(&mut self, kind: Kind) -> &mut Subscription {
        let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &mut self.subscriptions[i]
    }
}

/// A response message; `None` (logged, and the stream goes on) if it does not decode.
fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).inspect_err(|e| tracing::warn!("xds: a response that does not decode: {e}")).ok()
}

/// The kind of a response's type; `None` (logged) for a type wasmproxy does not ask for.
fn kind_of(type_url: &str) -> Option<Kind> {
    let kind = Kind::of_url(type_url);
    if kind.is_none() {
        tracing::warn!("xds: a response of type {type_url:?}, which wasmproxy does not ask for");
    }
    kind
}
