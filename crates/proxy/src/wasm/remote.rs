//! Modules by URL (`vm_config.code.remote`): fetched through a cluster (or pulled from an
//! OCI registry, `oci`) with Envoy's retries,
//! checked against their sha256, and kept by sha256 in memory and on disk (under the
//! compile cache's directory, `remote/`, bounded in size), so a restart finds them there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmproxy_config::model::{Cluster as ClusterConfig, RemoteCode};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Gauge, StatName, Store};

use crate::limits::{MAX_REMOTE_CACHE_BYTES, MAX_REMOTE_MODULE_BYTES};
use crate::tls::upstream::InlineOnly;
use crate::upstream::cluster::{ClusterSnapshot, Clusters};
use crate::upstream::registry::Upstreams;
use crate::wasm::oci::{Image, PullError};

/// Envoy's `wasm.remote_load_*` stats.
struct RemoteStats {
    fetch_successes: Counter,
    fetch_failures: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_entries: Gauge,
}

/// The modules fetched, by sha256.
pub struct RemoteModules {
    memory: HashMap<String, Arc<Vec<u8>>>,
    /// Where they are kept on disk, if anywhere.
    dir: Option<PathBuf>,
    stats: RemoteStats,
}

impl RemoteModules {
    /// None yet; on disk under `cache_dir/remote` if given.
    pub fn new(cache_dir: Option<PathBuf>, store: &Store) -> RemoteModules {
        let c = |name: &str| store.counter(StatName::plain(format!("wasm.remote_load_{name}")));
        let stats = RemoteStats {
            fetch_successes: c("fetch_successes"),
            fetch_failures: c("fetch_failures"),
            cache_hits: c("cache_hits"),
            cache_misses: c("cache_misses"),
            cache_entries: store.gauge(StatName::plain("wasm.remote_load_cache_entries")),
        };
        RemoteModules { memory: HashMap::new(), dir: cache_dir.map(|d| d.join("remote")), stats }
    }

    /// The module of that sha256, from memory or from the disk cache (read and checked
    /// again); `None` if it has to be fetched.
    pub fn get(&mut self, sha256: &str) -> Option<Arc<Vec<u8>>> {
        if let Some(bytes) = self.memory.get(sha256) {
            return Some(bytes.clone());
        }
        let path = self.dir.as_ref()?.join(format!("{sha256}.wasm"));
        match std::fs::read(&path) {
            Ok(bytes) if hex_sha256(&bytes) == sha256 => {
                self.stats.cache_hits.inc();
                let bytes = Arc::new(bytes);
                self.memory.insert(sha256.to_string(), bytes.clone());
                self.stats.cache_entries.set(self.memory.len() as u64);
                Some(bytes)
            }
            Ok(_) => {
                tracing::warn!("wasm: {} does not hold what its name says; it is fetched again", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
            Err(_) => None,
        }
    }

    /// The module of that sha256 if it is in memory.
    pub fn peek(&self, sha256: &str) -> Option<Arc<Vec<u8>>> {
        self.memory.get(sha256).cloned()
    }

    /// Counts a module that was not cached.
    pub fn missed(&self) {
        self.stats.cache_misses.inc();
    }

    /// Takes what a fetch brought: kept in memory and written to the disk cache.
    pub fn fetched(&mut self, sha256: &str, result: Result<Vec<u8>, String>) -> Result<(), String> {
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(e) => {
                self.stats.fetch_failures.inc();
                return Err(e);
            }
        };
        self.stats.fetch_successes.inc();
        if let Some(dir) = &self.dir
            && let Err(e) = write_cached(dir, sha256, &bytes)
        {
            tracing::warn!("wasm: cannot keep the module {sha256} in {}: {e}", dir.display());
        }
        self.memory.insert(sha256.to_string(), Arc::new(bytes));
        self.stats.cache_entries.set(self.memory.len() as u64);
        Ok(())
    }

    /// Forgets the modules no plugin uses any more (the disk cache keeps them).
    pub fn retain(&mut self, used: &[&str]) {
        self.memory.retain(|sha, _| used.contains(&sha.as_str()));
        self.stats.cache_entries.set(self.memory.len() as u64);
    }
}

/// Writes a module into the cache (beside, then moved into place), then removes the least
/// recently written ones past the size bound.
fn write_cached(dir: &std::path::Path, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{sha256}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(format!("{sha256}.wasm")))?;
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    entries.sort();
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    for (_, len, path) in entries {
        if total <= MAX_REMOTE_CACHE_BYTES {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
    Ok(())
}

/// The sha256 of bytes, in lowercase hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Fetches a module: a GET of the URI through `cluster`, or a pull from the OCI registry
/// (`cluster` is `None`); each attempt within the timeout, retried with Envoy's back-off.
/// The module must have the sha256: a wrong one is not fetched again (Envoy gives up at
/// once too).
pub async fn fetch(
    code: &RemoteCode,
    cluster: Option<&ClusterConfig>,
    store: &Arc<Store>,
    upstreams: &Arc<Upstreams>,
) -> Result<Vec<u8>, String> {
    let source = match cluster {
        Some(cluster) => Source::Cluster(ClusterSource::new(code, cluster, store, upstreams).await?),
        None => Source::Registry(Image::new(&code.uri)?),
    };
    let mut wait = code.base_interval;
    let mut last = String::new();
    for attempt in 0..=code.retries {
        if attempt > 0 {
            // Envoy's jittered back-off: a random part of the interval, which doubles.
            tokio::time::sleep(wait.mul_f64(crate::random::unit()).max(Duration::from_millis(1))).await;
            wait = (wait * 2).min(code.max_interval);
        }
        let module = match &source {
            Source::Cluster(cluster) => cluster.get(code.timeout).await,
            Source::Registry(image) => match tokio::time::timeout(code.timeout, image.pull()).await {
                Ok(pulled) => pulled,
                Err(_) => Err(PullError::Retry("timed out".into())),
            },
        };
        match module {
            Ok(bytes) => {
                let got = hex_sha256(&bytes);
                if got == code.sha256 {
                    return Ok(bytes);
                }
                return Err(format!("{}: the module's sha256 is {got}, not {}", code.uri, code.sha256));
            }
            Err(PullError::Final(why)) => return Err(format!("{}: {why}", code.uri)),
            Err(PullError::Retry(why)) => last = format!("{}: {why}", code.uri),
        }
    }
    Err(format!("{last} (after {} retries)", code.retries))
}

/// Where a module comes from.
enum Source {
    Cluster(ClusterSource),
    Registry(Image),
}

/// A module's URL on a cluster.
struct ClusterSource {
    /// Holds the cluster's connections while the fetch lasts.
    _clusters: Clusters,
    cluster: std::rc::Rc<crate::upstream::cluster::Cluster>,
    headers: Headers,
}

impl ClusterSource {
    /// The GET of the URI, through a cluster of its own (the configuration's may change).
    async fn new(
        code: &RemoteCode,
        cluster: &ClusterConfig,
        store: &Arc<Store>,
        upstreams: &Arc<Upstreams>,
    ) -> Result<ClusterSource, String> {
        let snapshot = ClusterSnapshot::new(cluster, &mut InlineOnly("a cluster modules are fetched through"))?;
        let clusters = Clusters::new(store, upstreams, false);
        clusters.update(&[Arc::new(snapshot)]).await;
        let cluster = clusters.get(&cluster.name).ok_or("the cluster is gone")?;
        let uri: http::Uri = code.uri.parse().map_err(|e| format!("{}: {e}", code.uri))?;
        let mut headers = Headers::new();
        headers.add(b":method", b"GET");
        headers.add(b":path", uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
        headers.add(b":authority", uri.authority().map_or("", |a| a.as_str()).as_bytes());
        headers.add(b":scheme", uri.scheme_str().unwrap_or("http").as_bytes());
        // As Envoy's remote data fetcher sends it, through its router: internal, with its
        // timeout, and forwarded for the node's own address.
        headers.add(b"x-envoy-internal", b"true");
        headers.add(b"x-envoy-expected-rq-timeout-ms", code.timeout.as_millis().to_string().as_bytes());
        headers.add(b"x-forwarded-for", crate::stream_info::node::local_address().to_string().as_bytes());
        Ok(ClusterSource { _clusters: clusters, cluster, headers })
    }

    /// One attempt: the body of a 200.
    async fn get(&self, timeout: Duration) -> Result<Vec<u8>, PullError> {
        let response = self.cluster.send_with_limit(
            &self.headers,
            bytes::Bytes::new(),
            Some(timeout),
            true,
            MAX_REMOTE_MODULE_BYTES,
        );
        match response.await {
            Ok(r) if r.headers.get(b":status") == Some(b"200") => Ok(r.body.to_vec()),
            Ok(r) => {
                let status = String::from_utf8_lossy(r.headers.get(b":status").unwrap_or_default()).into_owned();
                Err(PullError::Retry(format!("HTTP {status}")))
            }
            Err(e) => Err(PullError::Retry(describe(&e))),
        }
    }
}

/// Why a request got no response, in words.
fn describe(e: &crate::upstream::error::UpstreamError) -> String {
    use crate::upstream::error::UpstreamError;
    match e {
        UpstreamError::Timeout | UpstreamError::PerTryTimeout => "timed out".into(),
        UpstreamError::NoHealthyUpstream => "no healthy upstream".into(),
        UpstreamError::Overflow => "the cluster's circuit breakers are open".into(),
        UpstreamError::ConnectionFailure(why) => format!("cannot connect: {why}"),
        UpstreamError::Disconnected(why) | UpstreamError::Refused(why) => format!("the connection failed: {why}"),
        UpstreamError::ResponseTooLarge => format!("the module is over {MAX_REMOTE_MODULE_BYTES} bytes"),
    }
}
