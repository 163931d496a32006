//! Validation contexts from secrets (`validation_context_sds_secret_config`,
//! `combined_validation_context`), and how a filter chain checks client certificates
//! against one, or against its inline `validation_context`, as Envoy checks them (the
//! chain must lead to `trusted_ca`, one subject alternative name must match if any matcher
//! is given, CRLs; none sent is refused only with `require_client_certificate`). A secret
//! that changes is replaced in place: every chain and cluster checking against it is
//! rebuilt with it first, and one that cannot be leaves the last good context to all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use wasmproxy_config::model::CertificateValidation;

use crate::tls::certificate::{CertificateDetails, SanMatchers};
use crate::tls::pem;

/// A validation context secret as served, and what checks peers against it.
#[derive(Debug)]
pub struct ServedValidation(Mutex<Subscribed>);

/// The secret's context now, and who checks against it.
#[derive(Debug)]
struct Subscribed {
    secret: CertificateValidation,
    users: Vec<Weak<dyn ChecksPeers>>,
}

/// What checks peers' certificates against a secret's validation context (a chain's
/// client checks, a cluster's check of its upstreams), rebuilt when the secret changes.
pub trait ChecksPeers: Send + Sync + std::fmt::Debug {
    /// Builds its checks for the secret's new context; the closure returned puts them in
    /// force.
    fn rebuild(&self, secret: &CertificateValidation) -> Result<Box<dyn FnOnce() + '_>, String>;
}

impl ServedValidation {
    /// Reads and checks the files a secret's context names.
    pub fn load(secret: &CertificateValidation) -> Result<ServedValidation, String> {
        check_files(secret)?;
        Ok(ServedValidation(Mutex::new(Subscribed { secret: secret.clone(), users: Vec::new() })))
    }

    /// What `make` builds from the secret's context now, rebuilt whenever it changes.
    pub fn subscribe<T: ChecksPeers + 'static>(
        &self,
        make: impl FnOnce(&CertificateValidation) -> Result<T, String>,
    ) -> Result<Arc<T>, String> {
        let mut subscribed = self.lock();
        let user = Arc::new(make(&subscribed.secret)?);
        let weak: Weak<dyn ChecksPeers> = Arc::downgrade(&user) as Weak<dyn ChecksPeers>;
        subscribed.users.push(weak);
        Ok(user)
    }

    /// Serves `secret` from now on, once everything checking against it is rebuilt with it
    /// (else the current one stays, for all of them).
    pub fn replace(&self, secret: &CertificateValidation) -> Result<(), String> {
        check_files(secret)?;
        let mut subscribed = self.lock();
        subscribed.users.retain(|c| c.strong_count() > 0);
        let users: Vec<Arc<dyn ChecksPeers>> = subscribed.users.iter().filter_map(Weak::upgrade).collect();
        let installs: Vec<_> = users.iter().map(|u| u.rebuild(secret)).collect::<Result<_, _>>()?;
        for install in installs {
            install();
        }
        subscribed.secret = secret.clone();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribed> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the files a (partial) context names read as PEM certificates and CRLs.
fn check_files(secret: &CertificateValidation) -> Result<(), String> {
    if let Some(ca) = &secret.trusted_ca {
        pem::trust_anchors(Some(ca))?;
    }
    if let Some(crl) = &secret.crl {
        pem::crls(crl)?;
    }
    Ok(())
}

/// A chain's check of client certificates: rustls' `ClientCertVerifier`, rebuilt in place
/// when the secret its context comes from changes (handshakes from then on are checked
/// against the new one).
#[derive(Debug)]
pub struct ClientChecks {
    /// What the secret's context is merged into (`default_validation_context`).
    base: Option<CertificateValidation>,
    /// The secret, if the context comes from one (held so that it stays served while the
    /// chain is).
    _secret: Option<Arc<ServedValidation>>,
    /// `require_client_certificate`.
    required: bool,
    /// The checks in force.
    current: RwLock<Arc<ClientVerifier>>,
    /// The CA names sent in certificate requests.
    hints: HintLog,
    /// How many times the checks changed (the chain's sessions are bound to it).
    generation: Arc<AtomicU64>,
}

impl ClientChecks {
    /// Checks against an inline `validation_context`.
    pub fn inline(validation: &CertificateValidation, required: bool) -> Result<Arc<ClientChecks>, String> {
        let verifier = ClientVerifier::new(validation, required)?;
        let hints = HintLog::new(verifier.chain.root_hint_subjects().to_vec());
        let current = RwLock::new(Arc::new(verifier));
        let generation = Arc::default();
        Ok(Arc::new(ClientChecks { base: None, _secret: None, required, current, hints, generation }))
    }

    /// Checks against the context of `secret`, merged into `default` if given; rebuilt when
    /// the secret changes.
    pub fn from_secret(
        secret: Arc<ServedValidation>,
        default: Option<&CertificateValidation>,
        required: bool,
    ) -> Result<Arc<ClientChecks>, String> {
        secret.subscribe(|context| {
            let verifier = ClientVerifier::new(&merged(default, context), required)?;
            let hints = HintLog::new(verifier.chain.root_hint_subjects().to_vec());
            let current = RwLock::new(Arc::new(verifier));
            let generation = Arc::default();
            Ok(ClientChecks {
                base: default.cloned(),
                _secret: Some(secret.clone()),
                required,
                current,
                hints,
                generation,
            })
        })
    }

    /// What `/certs` shows of the CA client certificates are checked against now.
    pub fn ca(&self) -> Option<CertificateDetails> {
        self.verifier().ca.clone()
    }

    /// How many times the checks changed, counted on: a session made before a change is
    /// not resumed.
    pub fn generation(&self) -> Arc<AtomicU64> {
        self.generation.clone()
    }

    fn verifier(&self) -> Arc<ClientVerifier> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ChecksPeers for ClientChecks {
    fn rebuild(&self, secret: &CertificateValidation) -> Result<Box<dyn FnOnce() + '_>, String> {
        let verifier = ClientVerifier::new(&merged(self.base.as_ref(), secret), self.required)?;
        Ok(Box::new(move || {
            self.hints.push(verifier.chain.root_hint_subjects().to_vec());
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(verifier);
            self.generation.fetch_add(1, Ordering::Relaxed);
        }))
    }
}

/// A secret's context merged into a default one, if any.
pub fn merged(default: Option<&CertificateValidation>, secret: &CertificateValidation) -> CertificateValidation {
    match default {
        Some(default) => CertificateValidation::merged(default, secret),
        None => secret.clone(),
    }
}

impl ClientCertVerifier for ClientChecks {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.hints.newest()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verifier = self.verifier();
        verifier.chain.verify_client_cert(end_entity, intermediates, now)?;
        verifier.san_matchers.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().chain.supported_verify_schemes()
    }
}

/// One context's checks: rustls' check of the chain (webpki), then Envoy's subject
/// alternative name matchers.
#[derive(Debug)]
struct ClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    san_matchers: SanMatchers,
    /// What `/certs` shows of its CA.
    ca: Option<CertificateDetails>,
}

impl ClientVerifier {
    fn new(validation: &CertificateValidation, required: bool) -> Result<ClientVerifier, String> {
        let (roots, ca) = pem::trust_anchors(validation.trusted_ca.as_ref())?;
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), pem::provider());
        let builder = if required { builder } else { builder.allow_unauthenticated() };
        let builder = match &validation.crl {
            None => builder,
            Some(crl) => {
                // A certificate whose issuer has no CRL here passes (see docs/CONFIG.md).
                let builder = builder.with_crls(pem::crls(crl)?).allow_unknown_revocation_status();
                if validation.only_verify_leaf_cert_crl { builder.only_check_end_entity_revocation() } else { builder }
            }
        };
        let chain = builder.build().map_err(|e| format!("validation_context: {e}"))?;
        Ok(ClientVerifier { chain, san_matchers: SanMatchers::new(&validation.subject_alt_names)?, ca })
    }
}

/// Every list of CA names a chain has sent, newest last. rustls borrows the list for a
/// handshake, so lists are kept for the chain's life: one more each time its CA changes.
#[derive(Debug)]
struct HintLog(HintNode);

#[derive(Debug)]
struct HintNode {
    names: Vec<DistinguishedName>,
    next: OnceLock<Box<HintNode>>,
}

impl HintLog {
    fn new(names: Vec<DistinguishedName>) -> HintLog {
        HintLog(HintNode { names, next: OnceLock::new() })
    }

    /// The list sent now.
    fn newest(&self) -> &[DistinguishedName] {
        &self.last().names
    }

    /// Sends `names` from now on (its writers are serialized by the secret's lock).
    fn push(&self, names: Vec<DistinguishedName>) {
        let mut node = Box::new(HintNode { names, next: OnceLock::new() });
        loop {
            match self.last().next.set(node) {
                Ok(()) => return,
                Err(back) => node = back,
            }
        }
    }

    fn last(&self) -> &HintNode {
        let mut node = &self.0;
        while let Some(next) = node.next.get() {
            node = next;
        }
        node
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use wasmproxy_config::model::DataSource;

    use super::*;

    /// A self-signed CA certificate named `name`, as a validation context's `trusted_ca`.
    fn ca(name: &str) -> CertificateValidation {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        CertificateValidation {
            trusted_ca: Some(DataSource::Inline(cert.pem().into_bytes())),
            subject_alt_names: Vec::new(),
            crl: None,
            only_verify_leaf_cert_crl: false,
        }
    }

    #[test]
    fn a_new_secret_rebuilds_every_chain_or_none() {
        let first = ca("first");
        let served = Arc::new(ServedValidation::load(&first).unwrap());
        let without_ca = CertificateValidation { trusted_ca: None, ..first.clone() };
        let plain = ClientChecks::from_secret(served.clone(), None, true).unwrap();
        let combined = ClientChecks::from_secret(served.clone(), Some(&without_ca), false).unwrap();
        let names = |checks: &ClientChecks| -> Vec<Vec<u8>> {
            checks.root_hint_subjects().iter().map(|n| n.as_ref().to_vec()).collect()
        };
        let before = names(&plain);
        assert_eq!(names(&combined), before);
        let serial = |checks: &ClientChecks| checks.ca().unwrap().serial;
        let shown = serial(&plain);

        served.replace(&ca("second")).unwrap();
        assert_ne!(names(&plain), before, "the new CA's name is sent");
        assert_eq!(names(&combined), names(&plain));
        assert_ne!(serial(&plain), shown, "/certs shows the new CA");

        // A context without a CA cannot check the chains: neither takes it.
        let after = names(&plain);
        assert!(served.replace(&without_ca).is_err());
        assert_eq!((names(&plain), names(&combined)), (after.clone(), after));

        // A chain gone is forgotten.
        drop(combined);
        served.replace(&ca("third")).unwrap();
        assert_eq!(served.lock().users.len(), 1);
    }

    #[test]
    fn a_secret_without_a_ca_is_merged_into_the_default() {
        let default = ca("default");
        let secret = CertificateValidation { trusted_ca: None, ..ca("unused") };
        let served = Arc::new(ServedValidation::load(&secret).unwrap());
        assert!(ClientChecks::from_secret(served.clone(), None, true).is_err(), "no CA at all");
        let checks = ClientChecks::from_secret(served, Some(&default), true).unwrap();
        assert_eq!(checks.root_hint_subjects().len(), 1);
    }
}
