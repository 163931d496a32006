//! The certificates filter chains serve: inline, from `static_resources.secrets`, or from
//! SDS files (`sds_config.path_config_source`). An SDS file is read again when it, or a
//! certificate or key file its secret names, is replaced; a certificate that changed is
//! replaced in place (new handshakes get it, open connections keep theirs, no listener
//! drains), and one that does not load leaves the last good one served.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use wasmproxy_config::model::{
    CertificateSource, DataSource, DownstreamTls, FileSource, Node, SdsSecret, Secret, TlsCertificate,
};
use wasmproxy_stats::Store;

use crate::observe::stats::SdsStats;
use crate::tls::downstream::{ServedCertificate, ServerTls, server_config};

/// The certificates of the configuration served now.
pub struct Secrets {
    /// `static_resources.secrets`.
    static_secrets: Vec<Secret>,
    /// The secrets read from SDS files, by name and file.
    files: Vec<SdsFile>,
    store: Arc<Store>,
    /// Whether the node has an `id` and a `cluster`, which Envoy requires of SDS.
    node_named: bool,
}

/// A secret from an SDS file, and what it was read from.
struct SdsFile {
    secret: SdsSecret,
    served: Arc<ServedCertificate>,
    /// The certificate as the file gives it (its files are watched).
    certificate: TlsCertificate,
    /// A hash of the file's text and of the files the certificate names, as last read.
    read: u64,
    /// `sds.<name>.*`.
    stats: SdsStats,
}

impl Secrets {
    /// The secrets of a configuration (`static_resources.secrets`) served as `node`; their
    /// stats go to `store`.
    pub fn new(static_secrets: Vec<Secret>, node: &Node, store: Arc<Store>) -> Secrets {
        let node_named = !node.id.is_empty() && !node.cluster.is_empty();
        Secrets { static_secrets, files: Vec::new(), store, node_named }
    }

    /// A certificate a chain serves (`position` in its list; an SDS file's is shared by
    /// every chain naming it).
    fn certificate(&mut self, source: &CertificateSource, position: usize) -> Result<Arc<ServedCertificate>, String> {
        let sds = match source {
            CertificateSource::Inline(certificate) => {
                return ServedCertificate::load(certificate, position).map(Arc::new);
            }
            CertificateSource::Sds(sds) => sds,
        };
        let Some(file) = &sds.source else {
            let secret = self.static_secrets.iter().find(|s| s.name == sds.name);
            let secret =
                secret.ok_or_else(|| format!("unknown secret {:?} (not in static_resources.secrets)", sds.name))?;
            return ServedCertificate::load(&secret.tls_certificate, position).map(Arc::new);
        };
        if let Some(known) = self.files.iter().find(|f| f.secret == *sds) {
            return Ok(known.served.clone());
        }
        if !self.node_named {
            // Envoy's own words.
            return Err("TlsCertificateSdsApi: node 'id' and 'cluster' are required. Set it either in 'node' config \
                        or via --service-node and --service-cluster options."
                .into());
        }
        let stats = SdsStats::new(&self.store, &sds.name);
        stats.subscription.attempted();
        let started = std::time::Instant::now();
        let (certificate, version, read) = read_secret(sds, file)?;
        let served =
            Arc::new(ServedCertificate::load(&certificate, 0).map_err(|e| format!("secret {:?}: {e}", sds.name))?);
        stats.accepted(&version, started.elapsed());
        self.files.push(SdsFile { secret: sds.clone(), served: served.clone(), certificate, read, stats });
        Ok(served)
    }

    /// A chain's TLS settings, with the certificates their sources give.
    pub fn server_tls(&mut self, tls: &DownstreamTls) -> Result<ServerTls, String> {
        let certificates: Result<Vec<_>, String> =
            tls.certificates.iter().enumerate().map(|(i, source)| self.certificate(source, i)).collect();
        server_config(tls, certificates?)
    }

    /// Forgets the SDS secrets no chain serves any more.
    pub fn forget_unused(&mut self) {
        self.files.retain(|f| Arc::strong_count(&f.served) > 1);
    }

    /// Reads again the SDS files whose text, or whose certificate's files, changed, and
    /// serves what they hold now; a secret that does not load keeps the last good one
    /// (`update_rejected`).
    pub fn refresh(&mut self) {
        for entry in &mut self.files {
            let Some(file) = &entry.secret.source else { continue };
            if fingerprint(&file.path, &entry.certificate) == entry.read {
                continue;
            }
            entry.stats.subscription.attempted();
            let started = std::time::Instant::now();
            let read = read_secret(&entry.secret, file).and_then(|(certificate, version, read)| {
                entry.served.replace(&certificate)?;
                Ok((certificate, version, read))
            });
            match read {
                Ok((certificate, version, read)) => {
                    tracing::info!("secret {:?}: new certificate served", entry.secret.name);
                    entry.stats.accepted(&version, started.elapsed());
                    entry.certificate = certificate;
                    entry.read = read;
                }
                Err(e) => {
                    tracing::warn!(
                        "secret {:?}: update rejected, the last good certificate stays: {e}",
                        entry.secret.name
                    );
                    entry.stats.subscription.rejected();
                    // Not read again until something changes once more.
                    entry.read = fingerprint(&file.path, &entry.certificate);
                }
            }
        }
    }

    /// The files to watch: each SDS file, and the files its certificate names.
    pub fn sources(&self) -> Vec<FileSource> {
        let mut sources = Vec::new();
        for entry in &self.files {
            sources.extend(entry.secret.source.clone());
            for data in [&entry.certificate.certificate_chain, &entry.certificate.private_key] {
                if let DataSource::File(path) = data {
                    sources.push(FileSource { path: path.clone(), watched_directory: None });
                }
            }
        }
        sources
    }
}

/// The certificate of secret `sds` in `file`, its `version_info`, and the fingerprint of
/// what it was read from.
fn read_secret(sds: &SdsSecret, file: &FileSource) -> Result<(TlsCertificate, String, u64), String> {
    let loaded = wasmproxy_config::load_secret_file(&file.path)
        .map_err(|e| format!("secret {:?}: {}: {e}", sds.name, file.path.display()))?;
    let secret = loaded
        .resources
        .into_iter()
        .find(|s| s.name == sds.name)
        .ok_or_else(|| format!("secret {:?}: not in {}", sds.name, file.path.display()))?;
    let read = fingerprint(&file.path, &secret.tls_certificate);
    Ok((secret.tls_certificate, loaded.version_info, read))
}

/// A hash of a file's bytes and of the files a certificate names (a missing file hashes as
/// absent).
fn fingerprint(file: &PathBuf, certificate: &TlsCertificate) -> u64 {
    let mut hasher = DefaultHasher::new();
    std::fs::read(file).ok().hash(&mut hasher);
    for data in [&certificate.certificate_chain, &certificate.private_key] {
        if let DataSource::File(path) = data {
            std::fs::read(path).ok().hash(&mut hasher);
        }
    }
    hasher.finish()
}
