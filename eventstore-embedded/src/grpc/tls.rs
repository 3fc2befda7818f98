//! TLS for the gRPC listener: the server's certificate (the operator's PEM
//! files, or a CA and node certificate generated into `DATA/tls/`) and the
//! rustls acceptor built from it.
//!
//! The handshakes themselves run in `transport::incoming`. rustls is given
//! its crypto provider explicitly: the official Rust client installs the
//! process-wide default itself and panics if someone else installed one first,
//! and a server and its clients often share a process (tests, the host).
//! Client certificates are not asked for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::security::{create_private_dir, write_private, write_with_mode, TlsSettings, TLS_DIR};
use crate::Error;

/// The ALPN protocol gRPC runs over.
const ALPN_H2: &[u8] = b"h2";

/// A ready acceptor and the CA file clients should trust, when known.
#[derive(Clone)]
pub(crate) struct ServerTls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("ca_file", &self.ca_file).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads (or generates, for [`TlsSettings::Generated`]) the certificate
    /// the server at `addr` presents.
    pub(crate) fn load(settings: &TlsSettings, data_dir: &Path, addr: SocketAddr) -> Result<ServerTls, Error> {
        let (cert, key, ca_file) = match settings {
            TlsSettings::Files { cert, key, ca } => (cert.clone(), key.clone(), ca.clone()),
            TlsSettings::Generated => {
                let generated = generate(&data_dir.join(TLS_DIR), addr)?;
                (generated.cert, generated.key, Some(generated.ca))
            }
        };
        let chain = CertificateDer::pem_file_iter(&cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls_error(format!("cannot read the certificate {}: {e}", cert.display())))?;
        let key_der = PrivateKeyDer::from_pem_file(&key)
            .map_err(|e| tls_error(format!("cannot read the private key {}: {e}", key.display())))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| tls_error(format!("the certificate {} and key do not fit: {e}", cert.display())))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(ServerTls { acceptor: TlsAcceptor::from(Arc::new(config)), ca_file })
    }
}

/// Paths of the generated files.
struct Generated {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes the CA in `dir` if missing, then signs a node certificate for
/// `localhost`, the loopback addresses and `addr`. Everything but the CA
/// certificate is owner-only.
fn generate(dir: &Path, addr: SocketAddr) -> Result<Generated, Error> {
    create_private_dir(dir).map_err(|e| tls_error(e.to_string()))?;
    let files = Generated { ca: dir.join("ca.crt"), cert: dir.join("node.crt"), key: dir.join("node.key") };
    let ca_key_file = dir.join("ca.key");
    let ca_key = if ca_key_file.exists() && files.ca.exists() {
        let pem = std::fs::read_to_string(&ca_key_file)
            .map_err(|e| tls_error(format!("cannot read {}: {e}", ca_key_file.display())))?;
        KeyPair::from_pem(&pem).map_err(|e| tls_error(format!("{}: {e}", ca_key_file.display())))?
    } else {
        let ca_key = KeyPair::generate().map_err(cert_error)?;
        let ca = ca_params().self_signed(&ca_key).map_err(cert_error)?;
        write_private(&ca_key_file, ca_key.serialize_pem().as_bytes()).map_err(|e| tls_error(e.to_string()))?;
        write_with_mode(&files.ca, ca.pem().as_bytes(), 0o644).map_err(|e| tls_error(e.to_string()))?;
        tracing::info!(ca = %files.ca.display(), "generated a CA for the event store's TLS certificate");
        ca_key
    };
    // The same parameters and key as the stored CA certificate: what signs
    // the node certificate is its subject name and key, which match it.
    let issuer = ca_params().self_signed(&ca_key).map_err(cert_error)?;
    let node_key = KeyPair::generate().map_err(cert_error)?;
    let node = node_params(addr).signed_by(&node_key, &issuer, &ca_key).map_err(cert_error)?;
    write_private(&files.key, node_key.serialize_pem().as_bytes()).map_err(|e| tls_error(e.to_string()))?;
    write_private(&files.cert, node.pem().as_bytes()).map_err(|e| tls_error(e.to_string()))?;
    Ok(files)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "Projector event store CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn node_params(addr: SocketAddr) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    if !addr.ip().is_unspecified() && !ips.contains(&addr.ip()) {
        ips.push(addr.ip());
    }
    params.subject_alt_names = std::iter::once(SanType::DnsName("localhost".try_into().expect("a valid DNS name")))
        .chain(ips.into_iter().map(SanType::IpAddress))
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

fn tls_error(message: String) -> Error {
    Error::Tls(message)
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::Tls(format!("cannot generate a certificate: {e}"))
}
