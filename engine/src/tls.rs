//! TLS: rustls (aws-lc-rs) with certificates re-read when their files change. [`Certificates`] serves the RTMPS
//! and HTTPS listeners (`tls.cert_file`, `tls.key_file`); [`ClusterTls`] is node-to-node mutual TLS
//! (`cluster.tls_cert_file`, `cluster.tls_key_file`, `cluster.tls_ca_file`).
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
use rustls_pki_types::{ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
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
        Self::load_named(cert, key, "tls")
    }

    /// [`Certificates::load`], naming the files in errors as the keys of config section `section`.
    fn load_named(cert: &Path, key: &Path, section: &str) -> Result<Arc<Certificates>, String> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let ck = certified(&provider, cert, key).map_err(|e| e.replacen("tls.", &format!("{section}."), 2))?;
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

impl ResolvesClientCert for Certificates {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Node-to-node mutual TLS: both ends present a certificate issued by the cluster CA, and each verifies the
/// other's chain against it. Names are not checked: nodes dial each other by address (the headless Service
/// resolves to pod IPs), and a certificate from the cluster CA is what proves membership; the cookie's challenge
/// then runs inside the encrypted session. The node's own certificate is re-read when its files change; the CA
/// is read at start.
#[derive(Clone)]
pub struct ClusterTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

impl ClusterTls {
    /// Loads the node's certificate and key and the cluster CA; an error names the file and what is wrong.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<(ClusterTls, Arc<Certificates>), String> {
        let certs = Certificates::load_named(cert, key, "cluster.tls")?;
        let bad_ca = |e: String| format!("cluster.tls_ca_file {}: {e}", ca.display());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad_ca(e.to_string()))? {
            roots.add(c.map_err(|e| bad_ca(e.to_string()))?).map_err(|e| bad_ca(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad_ca("no certificate in it".into()));
        }
        let roots = Arc::new(roots);
        let provider = certs.provider.clone();
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| bad_ca(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(certs.clone());
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| bad_ca(e.to_string()))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaOnly(server_verifier)))
            .with_client_cert_resolver(certs.clone());
        let tls = ClusterTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        };
        Ok((tls, certs))
    }

    /// Accepts a peer: requires its client certificate from the cluster CA.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Dials a peer: presents this node's certificate, verifies the peer's chain (not its name).
    pub fn connector(&self) -> TlsConnector {
        self.connector.clone()
    }
}

/// Verifies a server's chain against the cluster CA and ignores only a name mismatch (see [`ClusterTls`]).
#[derive(Debug)]
struct CaOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        // webpki checks the chain first and the name last: a name error means the chain is good.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
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
