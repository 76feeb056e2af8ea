//! The local certificate authority of `confab dev` (DESIGN.md §5, §8) and the rustls
//! configurations of the edge's listeners.
//!
//! On first start [`ensure_local_tls`] makes a CA and a server certificate under
//! `DATA_DIR/tls/`; clients trust `ca.pem`. Later starts reuse both, and issue a new server
//! certificate from the same CA when it is missing, does not cover the requested names,
//! or expires within 30 days, so clients that trust the CA keep working.
//!
//! Every configuration here uses the *ring* provider explicitly: it is the one provider
//! compiled into the workspace (rustls' default would pull aws-lc-rs, a C build).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

const TLS_DIR: &str = "tls";
const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const LEAF_FILE: &str = "server.pem";
const LEAF_KEY_FILE: &str = "server-key.pem";

/// How long a new CA is valid. Long, because clients are told to trust it once.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a new server certificate is valid; under the 398 days some clients accept.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// A server certificate closer than this to expiry is replaced at start.
const RENEW_BEFORE: Duration = Duration::days(30);
/// Tolerance for clocks slightly behind the machine that issued the certificate.
const BACKDATE: Duration = Duration::days(1);

/// Names every local server certificate covers, before the configured host names.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

pub const ALPN_HTTP11: &[u8] = b"http/1.1";
pub const ALPN_H3: &[u8] = b"h3";
/// The internal edge ↔ core and core ↔ core link (mutual TLS).
pub const ALPN_LINK: &[u8] = b"confab-link/1";

/// The server's certificate chain and key, and where they are on disk.
pub struct TlsMaterial {
    /// The CA certificate clients should trust.
    pub ca_path: PathBuf,
    /// The server certificate followed by the CA certificate.
    pub cert_path: PathBuf,
    /// The server's private key.
    pub key_path: PathBuf,
    /// Server certificate first, then the CA.
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_path", &self.ca_path)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("cert_chain_len", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why TLS material could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file exists but cannot be used as it is; the message says what to do.
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Makes (first start) or reuses (later starts) the local CA and a server certificate for
/// `localhost`, `127.0.0.1`, `::1` and `hostnames`, under `data_dir/tls/`.
///
/// Writes `ca.pem`, `ca-key.pem` (0600), `server.pem` (server certificate + CA) and
/// `server-key.pem` (0600). A CA certificate without its key is an error rather than a
/// reason to make a new CA, since clients may already trust the old one.
pub fn ensure_local_tls(data_dir: &Path, hostnames: &[String]) -> Result<TlsMaterial, TlsError> {
    let dir = data_dir.join(TLS_DIR);
    ensure_tls(&dir, &dir, hostnames)
}

/// Like [`ensure_local_tls`], with the CA in `ca_dir` shared by several nodes (a local
/// cluster) and this node's certificate in `node_dir`. The certificate serves both as a
/// server certificate and as the node's client certificate on the internal link.
pub fn ensure_tls(
    ca_dir: &Path,
    node_dir: &Path,
    hostnames: &[String],
) -> Result<TlsMaterial, TlsError> {
    fs::create_dir_all(ca_dir).map_err(|source| io_error(ca_dir, source))?;
    fs::create_dir_all(node_dir).map_err(|source| io_error(node_dir, source))?;
    let names = leaf_names(hostnames);
    let ca = load_or_create_ca(ca_dir)?;

    let reused = if ca.fresh {
        None
    } else {
        load_leaf(node_dir, &ca, &names)?
    };
    let (cert_chain, key) = match reused {
        Some(leaf) => leaf,
        None => issue_leaf(node_dir, &ca, &names, LEAF_VALIDITY)?,
    };
    let material = TlsMaterial {
        ca_path: ca_dir.join(CA_FILE),
        cert_path: node_dir.join(LEAF_FILE),
        key_path: node_dir.join(LEAF_KEY_FILE),
        cert_chain,
        key,
    };
    // Fail here, at start, rather than in the listeners' infallible constructors.
    build_server_config(&material, false, ALPN_HTTP11)?;
    build_server_config(&material, true, ALPN_H3)?;
    build_link_server_config(&material)?;
    build_link_client_config(&material)?;
    Ok(material)
}

/// The rustls configuration of the HTTPS/WSS listener: TLS 1.2 and 1.3, ALPN `http/1.1`.
///
/// # Panics
/// If the material's key does not fit its certificate, which [`ensure_local_tls`] rules out.
pub fn http_server_config(material: &TlsMaterial) -> Arc<ServerConfig> {
    Arc::new(
        build_server_config(material, false, ALPN_HTTP11).expect("TLS material checked at load"),
    )
}

/// The rustls configuration of the HTTP/3 endpoint: TLS 1.3 only (QUIC requires it),
/// ALPN `h3`, no 0-RTT (REST requests are not all safe to replay).
///
/// # Panics
/// If the material's key does not fit its certificate, which [`ensure_local_tls`] rules out.
pub fn quic_server_config(material: &TlsMaterial) -> Arc<ServerConfig> {
    Arc::new(build_server_config(material, true, ALPN_H3).expect("TLS material checked at load"))
}

/// A client configuration (for tests, tools and the benchmark) that trusts only the
/// certificates in `ca_pem_path` and offers the `alpn` protocols, e.g.
/// `[ALPN_H3.to_vec()]` for HTTP/3 or none at all.
pub fn client_config_trusting(
    ca_pem_path: impl AsRef<Path>,
    alpn: &[Vec<u8>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let path = ca_pem_path.as_ref();
    let pem = fs::read(path).map_err(|source| io_error(path, source))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(path, format!("not a PEM certificate: {e}")))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(invalid(path, "no certificate in file"));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// The internal link's listener (a core node): TLS 1.3, ALPN `confab-link/1`, and a
/// client certificate from the same CA is required — only nodes of the cluster connect.
///
/// # Panics
/// If the material does not fit together, which [`ensure_tls`] rules out.
pub fn link_server_config(material: &TlsMaterial) -> Arc<ServerConfig> {
    Arc::new(build_link_server_config(material).expect("TLS material checked at load"))
}

/// The internal link's client side (an edge, or a core forwarding to its peer): trusts
/// only the cluster CA and presents this node's certificate.
///
/// # Panics
/// If the material does not fit together, which [`ensure_tls`] rules out.
pub fn link_client_config(material: &TlsMaterial) -> Arc<ClientConfig> {
    Arc::new(build_link_client_config(material).expect("TLS material checked at load"))
}

/// The CA certificate ending the chain, as a root store.
fn ca_roots(material: &TlsMaterial) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let ca = material
        .cert_chain
        .last()
        .ok_or_else(|| invalid(&material.cert_path, "empty certificate chain"))?;
    roots.add(ca.clone())?;
    Ok(roots)
}

fn build_link_server_config(material: &TlsMaterial) -> Result<ServerConfig, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(ca_roots(material)?),
        provider(),
    )
    .build()
    .map_err(|e| invalid(&material.ca_path, format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.cert_chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_LINK.to_vec()];
    Ok(config)
}

fn build_link_client_config(material: &TlsMaterial) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(ca_roots(material)?)
        .with_client_auth_cert(material.cert_chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_LINK.to_vec()];
    Ok(config)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_server_config(
    material: &TlsMaterial,
    quic: bool,
    alpn: &[u8],
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider());
    let builder = if quic {
        builder.with_protocol_versions(&[&rustls::version::TLS13])?
    } else {
        builder.with_safe_default_protocol_versions()?
    };
    let mut config = builder
        .with_no_client_auth()
        .with_single_cert(material.cert_chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

// ---- the CA ----

struct LocalCa {
    der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Made by this start: any server certificate on disk is from another CA.
    fresh: bool,
}

fn load_or_create_ca(dir: &Path) -> Result<LocalCa, TlsError> {
    let cert_path = dir.join(CA_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    match (exists(&cert_path)?, exists(&key_path)?) {
        (true, true) => {
            let ca = load_ca(&cert_path, &key_path)?;
            if expires_within(&ca.der, &cert_path, RENEW_BEFORE)? {
                // Trust in an expiring CA is lost anyway; clients must re-trust the new one.
                tracing::warn!(path = %cert_path.display(), "local CA expires soon; making a new one");
                create_ca(&cert_path, &key_path)
            } else {
                Ok(ca)
            }
        }
        (false, false) => create_ca(&cert_path, &key_path),
        (true, false) => Err(invalid(
            &key_path,
            "the CA key is missing, so no certificate can be issued; remove the tls directory to make a new CA",
        )),
        (false, true) => Err(invalid(
            &cert_path,
            "the CA certificate is missing but its key exists; remove the tls directory to make a new CA",
        )),
    }
}

fn load_ca(cert_path: &Path, key_path: &Path) -> Result<LocalCa, TlsError> {
    let pem = read_to_string(cert_path)?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| invalid(cert_path, format!("not a PEM certificate: {e}")))?;
    let key_pem = read_to_string(key_path)?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| invalid(key_path, format!("not a usable key: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| invalid(cert_path, format!("not an X.509 certificate: {e}")))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(invalid(key_path, "this key does not belong to ca.pem"));
    }
    let issuer = Issuer::from_ca_cert_der(&der, key)?;
    Ok(LocalCa {
        der,
        pem,
        issuer,
        fresh: false,
    })
}

fn create_ca(cert_path: &Path, key_path: &Path) -> Result<LocalCa, TlsError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "confab local CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "confab dev");
    // It signs server certificates only, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // Key first: a CA certificate on disk without its key would be a dead end.
    write_file(key_path, key.serialize_pem().as_bytes(), true)?;
    let pem = cert.pem();
    write_file(cert_path, pem.as_bytes(), false)?;
    tracing::info!(path = %cert_path.display(), "made a local CA; clients should trust this file");
    Ok(LocalCa {
        der: cert.der().clone(),
        pem,
        issuer: Issuer::new(params, key),
        fresh: true,
    })
}

// ---- the server certificate ----

type Leaf = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The server certificate on disk, if it is usable as it is.
fn load_leaf(dir: &Path, ca: &LocalCa, names: &[String]) -> Result<Option<Leaf>, TlsError> {
    let cert_path = dir.join(LEAF_FILE);
    let key_path = dir.join(LEAF_KEY_FILE);
    if !exists(&cert_path)? || !exists(&key_path)? {
        return Ok(None);
    }
    let chain_pem = fs::read(&cert_path).map_err(|source| io_error(&cert_path, source))?;
    let key_pem = read_to_string(&key_path)?;
    match check_leaf(&chain_pem, &key_pem, ca, names) {
        Ok(leaf) => Ok(Some(leaf)),
        Err(why) => {
            tracing::info!(path = %cert_path.display(), why, "issuing a new server certificate");
            Ok(None)
        }
    }
}

fn check_leaf(
    chain_pem: &[u8],
    key_pem: &str,
    ca: &LocalCa,
    names: &[String],
) -> Result<Leaf, &'static str> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "unreadable certificate file")?;
    let [leaf_der, ca_der] = chain.as_slice() else {
        return Err("certificate file is not server certificate + CA");
    };
    if *ca_der != ca.der {
        return Err("issued by another CA");
    }
    let (_, leaf) =
        x509_parser::parse_x509_certificate(leaf_der).map_err(|_| "unparsable certificate")?;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca.der).map_err(|_| "unparsable CA")?;
    leaf.verify_signature(Some(ca_cert.public_key()))
        .map_err(|_| "not signed by the CA")?;
    let remaining = leaf
        .validity()
        .time_to_expiration()
        .unwrap_or(Duration::ZERO);
    if remaining < RENEW_BEFORE {
        return Err("expires soon");
    }
    match leaf.extended_key_usage() {
        Ok(Some(eku)) if eku.value.server_auth && eku.value.client_auth => {}
        _ => return Err("not usable as both server and client certificate"),
    }
    let covered = certificate_names(&leaf);
    if names.iter().any(|name| !covered.contains(name)) {
        return Err("does not cover every host name");
    }
    let key = KeyPair::from_pem(key_pem).map_err(|_| "unusable key")?;
    if leaf.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("key does not match");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| "unusable key")?;
    Ok((chain, key))
}

fn issue_leaf(
    dir: &Path,
    ca: &LocalCa,
    names: &[String],
    validity: Duration,
) -> Result<Leaf, TlsError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "confab dev server");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Client auth too: a node presents the same certificate on the internal link.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;

    let key_pem = key.serialize_pem();
    write_file(&dir.join(LEAF_KEY_FILE), key_pem.as_bytes(), true)?;
    let chain_pem = format!("{}{}", cert.pem(), ca.pem);
    write_file(&dir.join(LEAF_FILE), chain_pem.as_bytes(), false)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        invalid(
            &dir.join(LEAF_KEY_FILE),
            format!("generated key unreadable: {e}"),
        )
    })?;
    Ok((vec![cert.der().clone(), ca.der.clone()], key))
}

/// The local names plus the configured ones, each once, in the form certificates print
/// them (lower-case DNS names, canonical IP addresses).
fn leaf_names(hostnames: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in LOCAL_NAMES
        .iter()
        .copied()
        .chain(hostnames.iter().map(String::as_str))
    {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let name = match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => name.to_ascii_lowercase(),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn certificate_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn expires_within(
    der: &CertificateDer<'_>,
    path: &Path,
    within: Duration,
) -> Result<bool, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| invalid(path, format!("not an X.509 certificate: {e}")))?;
    Ok(cert
        .validity()
        .time_to_expiration()
        .unwrap_or(Duration::ZERO)
        < within)
}

// ---- files ----

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|source| io_error(path, source))
}

fn read_to_string(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| io_error(path, source))
}

/// Writes through a temporary file and a rename, so a crash never leaves half a PEM file;
/// `private` files are created 0600 so the key is never readable by others, not even briefly.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("tls");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        // A leftover temporary file may carry other permissions; start from nothing.
        let _ = fs::remove_file(&tmp);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: io::Error) -> TlsError {
    TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn invalid(path: &Path, msg: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        msg: msg.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    #[test]
    fn first_start_writes_the_ca_and_later_starts_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_local_tls(dir.path(), &[]).unwrap();
        let tls = dir.path().join("tls");
        assert_eq!(first.ca_path, tls.join("ca.pem"));
        for file in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"] {
            assert!(tls.join(file).is_file(), "{file} missing");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in ["ca-key.pem", "server-key.pem"] {
                let mode = fs::metadata(tls.join(file)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{file} mode");
            }
        }
        assert_eq!(first.cert_chain.len(), 2);
        let ca = read(&first.ca_path);
        let leaf = read(&first.cert_path);

        let second = ensure_local_tls(dir.path(), &[]).unwrap();
        assert_eq!(read(&second.ca_path), ca, "CA replaced");
        assert_eq!(
            read(&second.cert_path),
            leaf,
            "server certificate replaced needlessly"
        );
        assert_eq!(second.cert_chain, first.cert_chain);
        assert_eq!(second.key.secret_der(), first.key.secret_der());
    }

    #[test]
    fn the_server_certificate_is_reissued_from_the_same_ca_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_local_tls(dir.path(), &[]).unwrap();
        let ca = read(&first.ca_path);

        // A new host name.
        let named = ensure_local_tls(dir.path(), &["Edge.Example".to_string()]).unwrap();
        assert_eq!(read(&named.ca_path), ca);
        assert_ne!(named.cert_chain[0], first.cert_chain[0]);
        let (_, leaf) = x509_parser::parse_x509_certificate(&named.cert_chain[0]).unwrap();
        let names = certificate_names(&leaf);
        for name in ["localhost", "127.0.0.1", "::1", "edge.example"] {
            assert!(
                names.contains(&name.to_string()),
                "{name} not covered: {names:?}"
            );
        }
        // Same names again, in another spelling: reused.
        let again = ensure_local_tls(dir.path(), &["edge.example ".to_string()]).unwrap();
        assert_eq!(again.cert_chain, named.cert_chain);

        // Missing.
        fs::remove_file(&named.cert_path).unwrap();
        let missing = ensure_local_tls(dir.path(), &[]).unwrap();
        assert_eq!(read(&missing.ca_path), ca);
        assert_ne!(missing.cert_chain[0], named.cert_chain[0]);

        // Expiring within 30 days.
        let tls = dir.path().join("tls");
        let ca_state = load_ca(&tls.join(CA_FILE), &tls.join(CA_KEY_FILE)).unwrap();
        let short = issue_leaf(&tls, &ca_state, &leaf_names(&[]), Duration::days(10)).unwrap();
        let renewed = ensure_local_tls(dir.path(), &[]).unwrap();
        assert_eq!(read(&renewed.ca_path), ca);
        assert_ne!(renewed.cert_chain[0], short.0[0]);
    }

    #[test]
    fn a_ca_without_its_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        ensure_local_tls(dir.path(), &[]).unwrap();
        fs::remove_file(dir.path().join("tls").join(CA_KEY_FILE)).unwrap();
        let err = ensure_local_tls(dir.path(), &[]).unwrap_err();
        assert!(matches!(err, TlsError::Invalid { .. }), "{err}");
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let material = ensure_local_tls(dir.path(), &[]).unwrap();
        let printed = format!("{material:?}");
        assert!(printed.contains("redacted"));
        assert!(!printed.contains(&format!("{:?}", material.key.secret_der())));
    }

    #[test]
    fn server_configs_offer_the_right_protocols() {
        let dir = tempfile::tempdir().unwrap();
        let material = ensure_local_tls(dir.path(), &[]).unwrap();
        assert_eq!(
            http_server_config(&material).alpn_protocols,
            [b"http/1.1".to_vec()]
        );
        assert_eq!(
            quic_server_config(&material).alpn_protocols,
            [b"h3".to_vec()]
        );
        assert_eq!(quic_server_config(&material).max_early_data_size, 0);
        let client = client_config_trusting(&material.ca_path, &[ALPN_H3.to_vec()]).unwrap();
        assert_eq!(client.alpn_protocols, [b"h3".to_vec()]);
    }

    /// One TLS connection over loopback TCP; returns what the server read and the ALPN.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<(Vec<u8>, Option<Vec<u8>>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let serving = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(b"pong").await?;
            tls.shutdown().await?;
            io::Result::Ok(buf.to_vec())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(client);
        let result = async {
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(b"ping").await?;
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await?;
            assert_eq!(answer, b"pong");
            io::Result::Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        }
        .await;
        match result {
            Ok(alpn) => Ok((serving.await.unwrap()?, alpn)),
            Err(e) => {
                serving.abort();
                Err(e)
            }
        }
    }

    #[tokio::test]
    async fn a_client_trusting_ca_pem_completes_a_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let material = ensure_local_tls(dir.path(), &["edge.test".to_string()]).unwrap();
        let client = client_config_trusting(&material.ca_path, &[ALPN_HTTP11.to_vec()]).unwrap();
        for name in ["localhost", "127.0.0.1", "edge.test"] {
            let name = ServerName::try_from(name.to_string()).unwrap();
            let (read, alpn) = handshake(http_server_config(&material), client.clone(), name)
                .await
                .unwrap();
            assert_eq!(read, b"ping");
            assert_eq!(alpn.as_deref(), Some(ALPN_HTTP11));
        }
        // Without ALPN too.
        let plain = client_config_trusting(&material.ca_path, &[]).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        handshake(http_server_config(&material), plain, name)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_trusting_another_ca_is_refused() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let material = ensure_local_tls(ours.path(), &[]).unwrap();
        let other = ensure_local_tls(theirs.path(), &[]).unwrap();
        let client = client_config_trusting(&other.ca_path, &[]).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        assert!(
            handshake(http_server_config(&material), client, name)
                .await
                .is_err()
        );

        // And a name the certificate does not cover.
        let client = client_config_trusting(&material.ca_path, &[]).unwrap();
        let name = ServerName::try_from("elsewhere.example").unwrap();
        assert!(
            handshake(http_server_config(&material), client, name)
                .await
                .is_err()
        );
    }
}
