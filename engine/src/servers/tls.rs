//! TLS for the RTMPS and HTTPS listeners: rustls (aws-lc-rs) with the certificate of `tls.cert_file` and
//! `tls.key_file`, re-read when either file changes.
//!
//! A watcher task looks at both files every [`RELOAD_CHECK`]; when one changed (modification time or size), the
//! pair is loaded and swapped in, and the next handshake uses it. A pair that does not load (half-written files,
//! a key that does not match) is logged and the current certificate stays: cert-manager writes both files of a
//! mounted Secret at once, so the next check finds them whole. Connections already open keep their session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// How often the certificate files are looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The current certificate, swapped when its files change.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

/// What a file looks like now (to notice a change).
fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Certificates {
    /// Loads the pair; an error names the file and what is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificates>, String> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let ck = certified(&provider, cert, key)?;
        Ok(Arc::new(Certificates {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Watches the files and swaps in a new pair when they change, until the process ends.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = (stamp(&me.cert), stamp(&me.key));
            loop {
                tokio::time::sleep(RELOAD_CHECK).await;
                let now = (stamp(&me.cert), stamp(&me.key));
                if now == seen {
                    continue;
                }
                match certified(&me.provider, &me.cert, &me.key) {
                    Ok(ck) => {
                        *me.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
                        seen = now;
                        info!(cert = %me.cert.display(), "TLS certificate reloaded");
                    }
                    // Half-written or mismatched: keep the current one and look again.
                    Err(e) => {
                        warn!(error = %e, "TLS certificate changed but does not load yet; keeping the current one")
                    }
                }
            }
        })
    }

    /// A TLS acceptor over the current certificate, offering `alpn` (e.g. `h2`, `http/1.1`).
    pub fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<TlsAcceptor, String> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn certified(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls.cert_file {}: no certificate in it", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
    let signing =
        provider.key_provider.load_private_key(der).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| format!("tls.key_file {} does not match tls.cert_file: {e}", key.display()))?;
    Ok(ck)
}
