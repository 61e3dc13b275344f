//! TLS for both transports: the hub's self-signed identity, and clients that
//! pin it on first use (a known-hubs file, like SSH) or trust a CA bundle.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::NetError;

/// The cryptography every TLS configuration here uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `sha256:<hex>` of a certificate's DER bytes.
pub fn fingerprint(cert: &[u8]) -> String {
    format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, cert)))
}

/// The hub's key pair and certificate: a self-signed one made on first
/// start (clients pin it), or a chain from a certificate authority.
pub struct Identity {
    /// The leaf certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Certificates that follow the leaf up to a root (none when
    /// self-signed).
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// What clients pin: `sha256:` and the leaf certificate's hash, hex.
    pub fingerprint: String,
    /// True when this start created it.
    pub created: bool,
}

impl Identity {
    /// Loads `<dir>/hub-key.der` and `<dir>/hub-cert.der`, creating them on
    /// first start (key written with mode 0600, both renamed into place).
    pub fn load_or_create(dir: &Path) -> Result<Identity, NetError> {
        let (kp, cp) = (dir.join("hub-key.der"), dir.join("hub-cert.der"));
        let io = |p: &Path, e: std::io::Error| NetError::Io(format!("{}: {e}", p.display()));
        let self_signed = |cert: Vec<u8>, key: Vec<u8>, created| {
            let fingerprint = fingerprint(&cert);
            Identity { cert: CertificateDer::from(cert), chain: Vec::new(), key: PrivatePkcs8KeyDer::from(key).into(), fingerprint, created }
        };
        if kp.exists() && cp.exists() {
            let key = std::fs::read(&kp).map_err(|e| io(&kp, e))?;
            let cert = std::fs::read(&cp).map_err(|e| io(&cp, e))?;
            return Ok(self_signed(cert, key, false));
        }
        let ck = rcgen::generate_simple_self_signed(vec!["ferry-hub".into()]).map_err(|e| NetError::Tls(e.to_string()))?;
        let key = ck.key_pair.serialize_der();
        let cert = ck.cert.der().to_vec();
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        write_private(&kp, &key).map_err(|e| io(&kp, e))?;
        write_private(&cp, &cert).map_err(|e| io(&cp, e))?;
        Ok(self_signed(cert, key, true))
    }

    /// A certificate chain (PEM, leaf first) and its private key (PEM:
    /// PKCS#8, PKCS#1 or SEC1), as a certificate authority issues them.
    pub fn from_pem(chain: &Path, key: &Path) -> Result<Identity, NetError> {
        let bad = |p: &Path, e: &dyn std::fmt::Display| NetError::Tls(format!("{}: {e}", p.display()));
        let mut certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(chain).map_err(|e| bad(chain, &e))?.collect::<Result<_, _>>().map_err(|e| bad(chain, &e))?;
        if certs.is_empty() {
            return Err(bad(chain, &"no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
        let leaf = certs.remove(0);
        let identity = Identity { fingerprint: fingerprint(&leaf), cert: leaf, chain: certs, key, created: false };
        // Refuse a key that does not go with the certificate now, not at
        // the first handshake.
        identity.server_config()?;
        Ok(identity)
    }

    /// A secret for QUIC stateless resets that survives restarts: derived
    /// from the private key, from which it reveals nothing.
    pub fn reset_key(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"ferry/1 stateless reset key\0");
        ctx.update(self.key.secret_der());
        ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    /// A TLS server configuration presenting this identity (ALPN `ferry/1`).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, NetError> {
        let signing = provider().key_provider.load_private_key(self.key.clone_key()).map_err(|e| NetError::Tls(e.to_string()))?;
        let chain: Vec<CertificateDer<'static>> = std::iter::once(self.cert.clone()).chain(self.chain.iter().cloned()).collect();
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| NetError::Tls(format!("the key does not go with the certificate: {e}")))?;
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(AnyName(Arc::new(certified))));
        c.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
        Ok(c)
    }
}

/// Serves the one certificate whatever name the client asked for: clients
/// reach a hub by many names and pin the certificate, not the name.
#[derive(Debug)]
struct AnyName(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for AnyName {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

/// How a client decides to trust a hub.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Pin the certificate fingerprint in this known-hubs file on first use.
    KnownHubs(PathBuf),
    /// Verify the hub's certificate chain against these CA certificates (PEM).
    CaBundle(PathBuf),
}

/// Verifies a hub's certificate by fingerprint: the pinned one if the
/// known-hubs file has the hub; otherwise a chain the system's certificate
/// authorities vouch for is taken as it is (nothing to pin), and any other
/// certificate is taken on first use. It records the fingerprint of a
/// certificate taken on trust so the client can pin it or explain a
/// mismatch.
#[derive(Debug)]
pub(crate) struct PinVerifier {
    pub expected: Option<String>,
    pub seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
    /// The system's roots (SSL_CERT_FILE and SSL_CERT_DIR are honoured);
    /// None where there are none.
    authority: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

/// A verifier for chains from the system's certificate authorities.
fn system_authority(provider: Arc<CryptoProvider>) -> Option<Arc<rustls::client::WebPkiServerVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return None;
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().ok()
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // A pin, once made, stays the test: a hub the user pinned keeps it.
        if let (None, Some(authority)) = (&self.expected, &self.authority) {
            if authority.verify_server_cert(end_entity, intermediates, name, ocsp, now).is_ok() {
                return Ok(ServerCertVerified::assertion());
            }
        }
        let fp = fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp.clone());
        match &self.expected {
            Some(e) if *e != fp => Err(rustls::Error::General(format!("certificate fingerprint {fp} does not match the pinned {e}"))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// One line per hub: `host:port sha256:<hex>`.
pub(crate) fn known_fingerprint(file: &Path, hub: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == hub).then(|| it.next().map(str::to_owned)).flatten()
    })
}

pub(crate) fn remember(file: &Path, hub: &str, fp: &str) -> Result<(), NetError> {
    use std::io::Write;
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d).map_err(|e| NetError::Io(format!("{}: {e}", d.display())))?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file).map_err(|e| NetError::Io(format!("{}: {e}", file.display())))?;
    writeln!(f, "{hub} {fp}").map_err(|e| NetError::Io(format!("{}: {e}", file.display())))
}

/// A client TLS config for `hub`, and the verifier (when pinning) that
/// records what it saw.
pub(crate) fn client_config(trust: &Trust, hub: &str) -> Result<(rustls::ClientConfig, Option<Arc<PinVerifier>>), NetError> {
    let builder =
        rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13]).map_err(|e| NetError::Tls(e.to_string()))?;
    let (mut cfg, pin) = match trust {
        Trust::KnownHubs(file) => {
            let expected = known_fingerprint(file, hub);
            let authority = if expected.is_none() { system_authority(provider()) } else { None };
            let v = Arc::new(PinVerifier { expected, seen: Mutex::new(None), provider: provider(), authority });
            (builder.dangerous().with_custom_certificate_verifier(v.clone()).with_no_client_auth(), Some(v))
        }
        Trust::CaBundle(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(pem).map_err(|e| NetError::Tls(format!("{}: {e}", pem.display())))? {
                let cert = cert.map_err(|e| NetError::Tls(format!("{}: {e}", pem.display())))?;
                roots.add(cert).map_err(|e| NetError::Tls(format!("{}: {e}", pem.display())))?;
            }
            (builder.with_root_certificates(roots).with_no_client_auth(), None)
        }
    };
    cfg.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    Ok((cfg, pin))
}
