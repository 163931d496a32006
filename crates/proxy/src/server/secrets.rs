//! The certificates, session ticket keys and validation contexts of filter chains and
//! clusters: inline, from
//! `static_resources.secrets`, or from SDS files (`sds_config.path_config_source`). An SDS
//! file is read again when it, or a file its secret names, is replaced; a secret that
//! changed is replaced in place (new handshakes get it, open connections keep theirs, no
//! listener drains), and one that does not load leaves the last good one served.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use wasmproxy_config::model::{
    CertificateSource, DataSource, DownstreamTls, FileSource, Node, SdsSecret, Secret, SecretKind, ValidationSource,
};
use wasmproxy_stats::Store;

use crate::observe::stats::SdsStats;
use crate::tls::downstream::{ServedCertificate, ServerTls, server_config};
use crate::tls::pem;
use crate::tls::tickets::TicketKeyRing;
use crate::tls::upstream::ClusterSecrets;
use crate::tls::validation::{ClientChecks, ServedValidation};

/// The secrets of the configuration served now.
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
    /// What serves it.
    served: Served,
    /// The secret as the file gives it (the files it names are watched).
    kind: SecretKind,
    /// A hash of the file's text and of the files the secret names, as last read.
    read: u64,
    /// `sds.<name>.*`.
    stats: SdsStats,
}

/// What serves a secret, replaced in place when it changes.
#[derive(Clone)]
enum Served {
    /// A certificate chains serve.
    Certificate(Arc<ServedCertificate>),
    /// Session ticket keys chains seal and open tickets with.
    TicketKeys(Arc<TicketKeyRing>),
    /// A validation context chains check client certificates against.
    Validation(Arc<ServedValidation>),
}

impl Served {
    /// What serves `kind` (its first certificate being at `position` of a chain's list).
    fn load(kind: &SecretKind, position: usize) -> Result<Served, String> {
        Ok(match kind {
            SecretKind::TlsCertificate(certificate) => {
                Served::Certificate(Arc::new(ServedCertificate::load(certificate, position)?))
            }
            SecretKind::SessionTicketKeys(keys) => Served::TicketKeys(Arc::new(TicketKeyRing::load(keys, pem::read)?)),
            SecretKind::ValidationContext(context) => Served::Validation(Arc::new(ServedValidation::load(context)?)),
        })
    }

    /// Serves `kind` from now on, if it loads and is the same kind of secret.
    fn replace(&self, kind: &SecretKind) -> Result<(), String> {
        match (self, kind) {
            (Served::Certificate(served), SecretKind::TlsCertificate(certificate)) => served.replace(certificate),
            (Served::TicketKeys(ring), SecretKind::SessionTicketKeys(keys)) => ring.replace(keys, pem::read),
            (Served::Validation(served), SecretKind::ValidationContext(context)) => served.replace(context),
            (_, other) => Err(format!("it holds {} now, not what it held", other.field())),
        }
    }

    /// The field that holds what it serves, to name it in errors.
    fn field(&self) -> &'static str {
        match self {
            Served::Certificate(_) => "a tls_certificate",
            Served::TicketKeys(_) => "session_ticket_keys",
            Served::Validation(_) => "a validation_context",
        }
    }

    /// Whether a chain still uses it.
    fn in_use(&self) -> bool {
        match self {
            Served::Certificate(served) => Arc::strong_count(served) > 1,
            Served::TicketKeys(ring) => Arc::strong_count(ring) > 1,
            Served::Validation(served) => Arc::strong_count(served) > 1,
        }
    }
}

impl Secrets {
    /// The secrets of a configuration (`static_resources.secrets`) served as `node`; their
    /// stats go to `store`.
    pub fn new(static_secrets: Vec<Secret>, node: &Node, store: Arc<Store>) -> Secrets {
        let node_named = !node.id.is_empty() && !node.cluster.is_empty();
        Secrets { static_secrets, files: Vec::new(), store, node_named }
    }

    /// What serves the secret `sds` names (at `position` of a chain's certificates), for
    /// Envoy's SDS API `api`: a static secret's is the chain's own, an SDS file's is shared
    /// by every chain naming it.
    fn served(&mut self, sds: &SdsSecret, position: usize, api: &str) -> Result<Served, String> {
        let Some(file) = &sds.source else {
            let secret = self.static_secrets.iter().find(|s| s.name == sds.name);
            let secret =
                secret.ok_or_else(|| format!("unknown secret {:?} (not in static_resources.secrets)", sds.name))?;
            return Served::load(&secret.kind, position);
        };
        if let Some(known) = self.files.iter().find(|f| f.secret == *sds) {
            return Ok(known.served.clone());
        }
        if !self.node_named {
            // Envoy's own words.
            return Err(format!(
                "{api}: node 'id' and 'cluster' are required. Set it either in 'node' config or via \
                 --service-node and --service-cluster options."
            ));
        }
        let stats = SdsStats::new(&self.store, &sds.name);
        stats.subscription.attempted();
        let started = std::time::Instant::now();
        let (kind, version, read) = read_secret(sds, file)?;
        let served = Served::load(&kind, 0).map_err(|e| format!("secret {:?}: {e}", sds.name))?;
        stats.accepted(&version, started.elapsed());
        self.files.push(SdsFile { secret: sds.clone(), served: served.clone(), kind, read, stats });
        Ok(served)
    }

    /// A certificate a chain serves (`position` in its list).
    fn certificate(&mut self, source: &CertificateSource, position: usize) -> Result<Arc<ServedCertificate>, String> {
        let sds = match source {
            CertificateSource::Inline(certificate) => {
                return ServedCertificate::load(certificate, position).map(Arc::new);
            }
            CertificateSource::Sds(sds) => sds,
        };
        match self.served(sds, position, "TlsCertificateSdsApi")? {
            Served::Certificate(served) => Ok(served),
            other => Err(format!("secret {:?} holds {}, not a tls_certificate", sds.name, other.field())),
        }
    }

    /// A chain's session ticket keys: `session_ticket_keys`, or the secret
    /// `session_ticket_keys_sds_secret_config` names; none: the chain makes its own.
    fn ticket_keys(&mut self, tls: &DownstreamTls) -> Result<Option<Arc<TicketKeyRing>>, String> {
        if let Some(sds) = &tls.session_ticket_keys_sds {
            return match self.served(sds, 0, "TlsSessionTicketKeysSdsApi")? {
                Served::TicketKeys(ring) => Ok(Some(ring)),
                other => Err(format!("secret {:?} holds {}, not session_ticket_keys", sds.name, other.field())),
            };
        }
        if tls.session_ticket_keys.is_empty() {
            return Ok(None);
        }
        TicketKeyRing::load(&tls.session_ticket_keys, pem::read).map(|ring| Some(Arc::new(ring)))
    }

    /// How a chain checks client certificates: against its `validation_context`, or the
    /// context of the secret it names (merged into its default one, if any); none: it asks
    /// for none.
    fn client_checks(&mut self, tls: &DownstreamTls) -> Result<Option<Arc<ClientChecks>>, String> {
        let required = tls.require_client_certificate;
        let (sds, default) = match &tls.validation {
            None => return Ok(None),
            Some(ValidationSource::Inline(validation)) => return ClientChecks::inline(validation, required).map(Some),
            Some(ValidationSource::Sds { secret, default }) => (secret, default),
        };
        let field =
            if default.is_some() { "combined_validation_context" } else { "validation_context_sds_secret_config" };
        ClientChecks::from_secret(self.validation(sds)?, default.as_ref(), required)
            .map(Some)
            .map_err(|e| format!("{field}: secret {:?}: {e}", sds.name))
    }

    /// A chain's TLS settings, with the certificates, ticket keys and client certificate
    /// checks their sources give.
    pub fn server_tls(&mut self, tls: &DownstreamTls) -> Result<ServerTls, String> {
        let certificates: Result<Vec<_>, String> =
            tls.certificates.iter().enumerate().map(|(i, source)| self.certificate(source, i)).collect();
        let ticket_keys = self.ticket_keys(tls)?;
        let client_checks = self.client_checks(tls)?;
        server_config(tls, certificates?, ticket_keys, client_checks)
    }

    /// Forgets the SDS secrets no chain or cluster uses any more.
    pub fn forget_unused(&mut self) {
        self.files.retain(|f| f.served.in_use());
    }

    /// Reads again the SDS files whose text, or whose secret's files, changed, and serves
    /// what they hold now; a secret that does not load keeps the last good one
    /// (`update_rejected`).
    pub fn refresh(&mut self) {
        for entry in &mut self.files {
            let Some(file) = &entry.secret.source else { continue };
            if fingerprint(&file.path, &entry.kind) == entry.read {
                continue;
            }
            entry.stats.subscription.attempted();
            let started = std::time::Instant::now();
            let read = read_secret(&entry.secret, file).and_then(|(kind, version, read)| {
                entry.served.replace(&kind).map_err(|e| format!("secret {:?}: {e}", entry.secret.name))?;
                Ok((kind, version, read))
            });
            match read {
                Ok((kind, version, read)) => {
                    tracing::info!("secret {:?}: new {} served", entry.secret.name, kind.field());
                    entry.stats.accepted(&version, started.elapsed());
                    entry.kind = kind;
                    entry.read = read;
                }
                Err(e) => {
                    tracing::warn!("secret {:?}: update rejected, the last good one stays: {e}", entry.secret.name);
                    entry.stats.subscription.rejected();
                    // Not read again until something changes once more.
                    entry.read = fingerprint(&file.path, &entry.kind);
                }
            }
        }
    }

    /// The files to watch: each SDS file, and the files its secret names.
    pub fn sources(&self) -> Vec<FileSource> {
        let mut sources = Vec::new();
        for entry in &self.files {
            sources.extend(entry.secret.source.clone());
            for path in named_files(&entry.kind) {
                sources.push(FileSource { path: path.clone(), watched_directory: None });
            }
        }
        sources
    }
}

impl ClusterSecrets for Secrets {
    fn certificate(&mut self, source: &CertificateSource) -> Result<Arc<ServedCertificate>, String> {
        Secrets::certificate(self, source, 0)
    }

    fn validation(&mut self, sds: &SdsSecret) -> Result<Arc<ServedValidation>, String> {
        match self.served(sds, 0, "CertificateValidationContextSdsApi")? {
            Served::Validation(served) => Ok(served),
            other => Err(format!("secret {:?} holds {}, not a validation_context", sds.name, other.field())),
        }
    }
}

/// The secret `sds` in `file`, its `version_info`, and the fingerprint of what it was read
/// from.
fn read_secret(sds: &SdsSecret, file: &FileSource) -> Result<(SecretKind, String, u64), String> {
    let loaded = wasmproxy_config::load_secret_file(&file.path)
        .map_err(|e| format!("secret {:?}: {}: {e}", sds.name, file.path.display()))?;
    let secret = loaded
        .resources
        .into_iter()
        .find(|s| s.name == sds.name)
        .ok_or_else(|| format!("secret {:?}: not in {}", sds.name, file.path.display()))?;
    let read = fingerprint(&file.path, &secret.kind);
    Ok((secret.kind, loaded.version_info, read))
}

/// The files a secret names.
fn named_files(kind: &SecretKind) -> Vec<&PathBuf> {
    let sources: Vec<&DataSource> = match kind {
        SecretKind::TlsCertificate(certificate) => vec![&certificate.certificate_chain, &certificate.private_key],
        SecretKind::SessionTicketKeys(keys) => keys.iter().collect(),
        SecretKind::ValidationContext(context) => context.trusted_ca.iter().chain(&context.crl).collect(),
    };
    sources
        .into_iter()
        .filter_map(|s| match s {
            DataSource::File(path) => Some(path),
            DataSource::Inline(_) => None,
        })
        .collect()
}

/// A hash of a file's bytes and of the files a secret names (a missing file hashes as
/// absent).
fn fingerprint(file: &PathBuf, kind: &SecretKind) -> u64 {
    let mut hasher = DefaultHasher::new();
    std::fs::read(file).ok().hash(&mut hasher);
    for path in named_files(kind) {
        std::fs::read(path).ok().hash(&mut hasher);
    }
    hasher.finish()
}
