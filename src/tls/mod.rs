//! TLS termination: rustls with one crypto provider (aws-lc-rs), TLS 1.2 and 1.3 only, ALPN
//! `h2` + `http/1.1`. The certificate sits behind an [`ArcSwap`] so a renewed certificate on
//! disk is served to new handshakes without a restart; a broken replacement is reported and the
//! last good certificate keeps serving.

mod dev_cert;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSource;
use crate::metrics::Metrics;

pub use dev_cert::ensure_dev_cert;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: invalid PEM: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path}: unusable private key: {source}")]
    Key { path: PathBuf, source: rustls::Error },
    #[error("certificate and key do not match: {0}")]
    Mismatch(rustls::Error),
    #[error("dev certificate: {0}")]
    DevCert(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM chain and key and checks they belong together.
pub fn load_certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = crate::files::read(cert).map_err(|source| TlsError::Read { path: cert.into(), source })?;
    let key_pem = crate::files::read(key).map_err(|source| TlsError::Read { path: key.into(), source })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { path: cert.into(), message: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.into() });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Pem { path: key.into(), message: e.to_string() })?;
    let signing =
        provider.key_provider.load_private_key(key_der).map_err(|source| TlsError::Key { path: key.into(), source })?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(e) => Err(TlsError::Mismatch(e)),
    }
}

/// When the leaf certificate of `ck` expires (its notAfter), in Unix seconds.
pub fn not_after(ck: &CertifiedKey) -> Option<u64> {
    use x509_cert::der::Decode;
    let leaf = x509_cert::Certificate::from_der(ck.end_entity_cert().ok()?.as_ref()).ok()?;
    Some(leaf.tbs_certificate.validity.not_after.to_unix_duration().as_secs())
}

/// Exports when `ck` expires (`payguard_certificate_expiry_timestamp_seconds`).
pub fn export_expiry(ck: &CertifiedKey, metrics: &Metrics) {
    if let Some(secs) = not_after(ck) {
        metrics.cert_expiry.set(i64::try_from(secs).unwrap_or(i64::MAX));
    }
}

/// Serves `ck` from now on and exports its expiry.
fn serve(resolver: &CertResolver, ck: CertifiedKey, metrics: &Metrics) {
    export_expiry(&ck, metrics);
    resolver.replace(ck);
}

/// Serves whatever certificate is current; swapped atomically on reload.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        CertResolver { current: ArcSwap::from_pointee(key) }
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// Whether the certificate served now is valid for `host` (a DNS name, wildcards as TLS
    /// clients read them, or an IP address). An HTTP/2 client may send a request for another
    /// host down a connection it opened for one, when it believes the certificate covers both
    /// (RFC 9113 §9.1.1); a request the certificate does not cover was misdirected.
    pub fn covers(&self, host: &str) -> bool {
        let key = self.current.load();
        let Some(leaf) = key.cert.first() else { return false };
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else { return false };
        let Ok(name) = rustls_pki_types::ServerName::try_from(host) else { return false };
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The certificate files to serve, after creating the dev certificate if none were configured.
pub fn cert_paths(source: &TlsSource) -> Result<(PathBuf, PathBuf), TlsError> {
    match source {
        TlsSource::Files { cert, key } => Ok((cert.clone(), key.clone())),
        TlsSource::Dev { dir } => ensure_dev_cert(dir),
    }
}

pub fn server_config(resolver: Arc<CertResolver>, provider: Arc<CryptoProvider>) -> Result<ServerConfig, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server picks the cipher suite (its list is AEAD-only, strongest first), not the client.
    cfg.ignore_client_order = true;
    // Stateless resumption keeps reconnecting clients (providers retrying, keep-alive pools
    // recycling) off the expensive full handshake.
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(cfg)
}

/// Watches the certificate files and swaps in a valid replacement. Polling file contents (not
/// inotify, not mtimes) on purpose: renewals often replace a symlink or a mounted secret, which
/// inotify watches on the old inode miss, and coarse mtimes can hide a quick replacement.
pub async fn watch_certificates(
    resolver: Arc<CertResolver>,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
    every: Duration,
    mut reload: crate::reload::Requests,
) {
    let fingerprint = |p: &Path| {
        crate::files::read(p).ok().map(|b| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            b.hash(&mut h);
            h.finish()
        })
    };
    let mut last = (fingerprint(&cert), fingerprint(&key));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let asked = tokio::select! {
            _ = tick.tick() => false,
            () = reload.next() => true,
        };
        let now = (fingerprint(&cert), fingerprint(&key));
        if now == last && !asked {
            continue;
        }
        last = now;
        match load_certified_key(&cert, &key, &provider) {
            Ok(ck) => {
                serve(&resolver, ck, &metrics);
                metrics.cert_reload(true);
                tracing::info!(target: "payguard::tls", cert = %cert.display(), "certificate reloaded");
            }
            Err(e) => {
                metrics.cert_reload(false);
                tracing::error!(target: "payguard::tls", error = %e, "certificate reload failed; still serving the previous certificate");
            }
        }
    }
}
