//! TLS at the edge (rustls): TLS 1.2 and 1.3 only (rustls has nothing older),
//! ALPN `h2` and `http/1.1`, and a certificate that can be swapped at run time
//! (SIGHUP) without touching established connections: the resolver hands out
//! whatever key is current at each new handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path} (`server.tls.cert`): {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("TLS key {path} (`server.tls.key`): {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS key {key} does not match certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Loads and checks a PEM certificate chain and its private key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(cert).map_err(|e| cert_err(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".into()));
    }
    let key_err = |reason: String| TlsError::Key {
        path: key.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(key).map_err(|e| key_err(e.to_string()))?;
    let der = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| key_err(format!("no usable PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, der, &default_provider()).map_err(|e| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    })
}

#[derive(Debug)]
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The edge's TLS acceptor with a reloadable certificate.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
}

impl Tls {
    pub fn new(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(load(cert, key)?),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Loads a new certificate for future handshakes; on error the old one stays.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        self.resolver.current.store(Arc::new(load(cert, key)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_good_pairs_and_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let tls = Tls::new(&cert, &key).unwrap();
        let (cert_b, key_b) = write_pair(dir.path(), "b");
        tls.reload(&cert_b, &key_b).unwrap();

        let e = Tls::new(&dir.path().join("missing.crt"), &key)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("TLS certificate") && e.contains("missing.crt"),
            "{e}"
        );
        std::fs::write(dir.path().join("junk.pem"), "hello").unwrap();
        let e = Tls::new(&dir.path().join("junk.pem"), &key)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no CERTIFICATE block"), "{e}");
        let e = Tls::new(&cert, &dir.path().join("junk.pem"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("TLS key") && e.contains("junk.pem"), "{e}");
        let e = Tls::new(&cert, &key_b).err().unwrap().to_string();
        assert!(e.contains("does not match"), "{e}");
        // A failed reload keeps the old certificate.
        assert!(tls.reload(&cert, &dir.path().join("junk.pem")).is_err());
    }
}
