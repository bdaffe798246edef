//! The cluster CA: an ECDSA P-256 key and self-signed certificate made once, at
//! bootstrap, and replicated through Raft (`Command::SetCa`) so that every controller
//! can sign. It issues three kinds of certificates, each bound to one identity by a
//! SPIFFE-style URI SAN:
//!
//! | kind | URI SAN | used for |
//! |---|---|---|
//! | node | `spiffe://fathom/node/<id>` (+ DNS/IP SANs of its addresses) | server side of every port, client side of Raft RPC |
//! | agent | `spiffe://fathom/agent/<id>` | agent -> server control and data |
//! | admin | `spiffe://fathom/admin/<name>` | fathomctl |
//!
//! Serials are 16 random bytes (hex in the metadata); every issued certificate is
//! recorded (`Command::RecordCert`) so that it can be revoked by serial or by agent.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fathom_cluster::state::{CaRecord, IssuedCert};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;

/// The URI prefix of every identity this CA issues.
pub const SPIFFE_PREFIX: &str = "spiffe://fathom/";

/// Certificates are valid from a little before they are made, so that a peer whose
/// clock is slightly behind does not refuse a fresh one.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("bad certificate signing request: {0}")]
    BadCsr(String),
    #[error("bad certificate: {0}")]
    BadCert(String),
    #[error("randomness: {0}")]
    Random(String),
}

/// Who a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Agent(String),
    Admin(String),
    Node(u64),
}

impl Identity {
    /// The URI SAN that binds a certificate to this identity.
    pub fn uri(&self) -> String {
        format!("{SPIFFE_PREFIX}{}", self.subject())
    }

    /// The subject as recorded in the metadata (`IssuedCert::subject`): "agent/<id>", ...
    pub fn subject(&self) -> String {
        match self {
            Identity::Agent(id) => format!("agent/{id}"),
            Identity::Admin(name) => format!("admin/{name}"),
            Identity::Node(id) => format!("node/{id}"),
        }
    }

    /// Parses a URI SAN; `None` for anything this CA does not issue.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(SPIFFE_PREFIX)?;
        let (kind, name) = rest.split_once('/')?;
        if !valid_name(name) {
            return None;
        }
        match kind {
            "agent" => Some(Identity::Agent(name.to_string())),
            "admin" => Some(Identity::Admin(name.to_string())),
            "node" => name.parse().ok().map(Identity::Node),
            _ => None,
        }
    }
}

/// Agent ids and admin names: 1..=128 of `[A-Za-z0-9._-]`, so that they are safe in a
/// URI, a file name and a log line.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What a peer certificate says, read from its DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: Identity,
    /// Lower-case hex of the serial number's bytes.
    pub serial: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

/// Reads the identity and serial of a certificate this CA issued. Never panics on any
/// input: garbage is an error.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, CaError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaError::BadCert(format!("cannot parse: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::BadCert(format!("bad subject alternative names: {e}")))?
        .ok_or_else(|| CaError::BadCert("no subject alternative names".into()))?;
    let mut identity = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if let Some(id) = Identity::from_uri(uri) {
                if identity.replace(id).is_some() {
                    return Err(CaError::BadCert("more than one fathom identity".into()));
                }
            }
        }
    }
    let identity = identity.ok_or_else(|| CaError::BadCert("no fathom identity".into()))?;
    let validity = cert.validity();
    let ms = |t: x509_parser::time::ASN1Time| (t.timestamp().max(0) as u64).saturating_mul(1000);
    Ok(CertInfo {
        identity,
        serial: hex(cert.raw_serial()),
        not_before_ms: ms(validity.not_before),
        not_after_ms: ms(validity.not_after),
    })
}

/// A certificate just issued, with the metadata record that goes with it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    /// Empty when the key stayed with the requester (a CSR was signed).
    pub key_pem: String,
    pub serial: String,
    pub record: IssuedCert,
}

/// The CA's key and certificate, ready to sign.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    /// The CA certificate as rcgen needs it for signing (same name and key).
    issuer: rcgen::Certificate,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn time_of(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| CaError::Random(e.to_string()))?;
    // A positive INTEGER with no leading zero byte, so the DER keeps all 16 bytes.
    raw[0] = (raw[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&raw))
}

impl ClusterCa {
    /// A new CA, valid for `ttl` from now.
    pub fn generate(ttl: Duration) -> Result<ClusterCa, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "fathom");
        dn.push(DnType::CommonName, "fathom cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = now_ms();
        params.not_before = time_of(now.saturating_sub(CLOCK_SKEW.as_millis() as u64));
        params.not_after = time_of(now.saturating_add(ttl.as_millis() as u64));
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Self::from_record(&CaRecord { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The CA from its replicated record.
    pub fn from_record(rec: &CaRecord) -> Result<ClusterCa, CaError> {
        let key = KeyPair::from_pem(&rec.key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(&rec.cert_pem)?;
        // Re-signing gives a certificate with the same subject and key: what signing needs.
        let issuer = params.self_signed(&key)?;
        let cert_der = pem_certs(&rec.cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::BadCert("CA record holds no certificate".into()))?;
        Ok(ClusterCa { cert_pem: rec.cert_pem.clone(), cert_der, key, issuer })
    }

    pub fn to_record(&self) -> CaRecord {
        CaRecord { cert_pem: self.cert_pem.clone(), key_pem: self.key.serialize_pem() }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A root store holding only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        // Our own certificate parsed when the CA was loaded; it cannot fail here.
        let _ = roots.add(self.cert_der.clone());
        roots
    }

    fn params_for(
        identity: &Identity,
        ttl: Duration,
        now: u64,
    ) -> Result<CertificateParams, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "fathom");
        dn.push(DnType::CommonName, identity.subject());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        params.not_before = time_of(now.saturating_sub(CLOCK_SKEW.as_millis() as u64));
        params.not_after = time_of(now.saturating_add(ttl.as_millis() as u64));
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    fn finish(
        identity: &Identity,
        cert: rcgen::Certificate,
        key_pem: String,
        not_after_ms: u64,
    ) -> Result<Issued, CaError> {
        let serial = cert
            .params()
            .serial_number
            .as_ref()
            .map(|s| hex(s.as_ref()))
            .ok_or_else(|| CaError::BadCert("no serial".into()))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem,
            record: IssuedCert {
                subject: identity.subject(),
                expires_at_ms: not_after_ms,
                revoked: false,
            },
            serial,
        })
    }

    /// A server node's certificate: server and client auth, with its addresses (IPs or
    /// DNS names) as SANs so that peers and agents can check the name they dialled.
    pub fn issue_node(
        &self,
        node_id: u64,
        addresses: &[String],
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let identity = Identity::Node(node_id);
        let now = now_ms();
        let mut params = Self::params_for(&identity, ttl, now)?;
        for a in addresses {
            let host = host_of(a);
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.to_string().try_into()?),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Self::finish(&identity, cert, key.serialize_pem(), now + ttl.as_millis() as u64)
    }

    /// An admin's client certificate (fathomctl), key included.
    pub fn issue_admin(&self, name: &str, ttl: Duration) -> Result<Issued, CaError> {
        if !valid_name(name) {
            return Err(CaError::BadCert(format!("invalid admin name {name:?}")));
        }
        let identity = Identity::Admin(name.to_string());
        let now = now_ms();
        let mut params = Self::params_for(&identity, ttl, now)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Self::finish(&identity, cert, key.serialize_pem(), now + ttl.as_millis() as u64)
    }

    /// Signs an agent's CSR. Only the CSR's public key is used: the certificate's names,
    /// usages and lifetime are ours. A CSR that asks for any other identity than
    /// `agent_id` (a different URI, DNS or IP name, or common name) is refused, and so is
    /// a CSR whose signature does not verify (the requester must hold the key).
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        agent_id: &str,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        if !valid_name(agent_id) {
            return Err(CaError::BadCsr(format!("invalid agent id {agent_id:?}")));
        }
        let identity = Identity::Agent(agent_id.to_string());
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(format!("cannot parse or verify: {e}")))?;
        for san in &csr.params.subject_alt_names {
            let ok = matches!(san, SanType::URI(u) if u.as_str() == identity.uri());
            if !ok {
                return Err(CaError::BadCsr(format!(
                    "asks for {san:?}; only {} may be requested",
                    identity.uri()
                )));
            }
        }
        for (ty, value) in csr.params.distinguished_name.iter() {
            if *ty == DnType::CommonName {
                let cn = match value {
                    rcgen::DnValue::Utf8String(s) => s.clone(),
                    rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
                    rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
                    other => format!("{other:?}"),
                };
                if cn != agent_id && cn != identity.subject() {
                    return Err(CaError::BadCsr(format!(
                        "common name {cn:?} is not agent {agent_id:?}"
                    )));
                }
            }
        }
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::BadCsr("the key must be ECDSA P-256".into()));
        }
        let now = now_ms();
        let mut params = Self::params_for(&identity, ttl, now)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let signed = CertificateSigningRequestParams { params, public_key: csr.public_key }
            .signed_by(&self.issuer, &self.key)?;
        Self::finish(&identity, signed, String::new(), now + ttl.as_millis() as u64)
    }
}

/// A key and CSR for an agent (the agent keeps the key).
pub fn agent_csr(agent_id: &str) -> Result<(String, String), CaError> {
    let identity = Identity::Agent(agent_id.to_string());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, agent_id);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Every certificate in a PEM text.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::BadCert(format!("bad PEM: {e}")))
}

/// "host:port", "[v6]:port" or a bare host -> the host.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
        _ => addr,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certs_carry_their_identity_and_serial() {
        let ca = ClusterCa::generate(Duration::from_secs(3600)).unwrap();
        let ca2 = ClusterCa::from_record(&ca.to_record()).unwrap();
        let node = ca2
            .issue_node(
                7,
                &["127.0.0.1:20035".into(), "db-1:20040".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let info = cert_info(&node.cert_der).unwrap();
        assert_eq!(info.identity, Identity::Node(7));
        assert_eq!(info.serial, node.serial);
        assert_eq!(node.record.subject, "node/7");
        let admin = ca.issue_admin("ops", Duration::from_secs(60)).unwrap();
        assert_eq!(cert_info(&admin.cert_der).unwrap().identity, Identity::Admin("ops".into()));
        let (csr, _key) = agent_csr("host-a").unwrap();
        let agent = ca.sign_agent_csr(&csr, "host-a", Duration::from_secs(60)).unwrap();
        let info = cert_info(&agent.cert_der).unwrap();
        assert_eq!(info.identity, Identity::Agent("host-a".into()));
        assert!(info.not_after_ms > info.not_before_ms);
    }

    #[test]
    fn csr_for_another_identity_or_garbage_is_refused() {
        let ca = ClusterCa::generate(Duration::from_secs(3600)).unwrap();
        let (csr, _) = agent_csr("host-a").unwrap();
        assert!(matches!(
            ca.sign_agent_csr(&csr, "host-b", Duration::from_secs(60)),
            Err(CaError::BadCsr(_))
        ));
        assert!(ca.sign_agent_csr("not a csr", "host-a", Duration::from_secs(60)).is_err());
        assert!(ca.sign_agent_csr(&csr, "bad/id", Duration::from_secs(60)).is_err());
        // A CSR whose signature does not match its key.
        let mut der = pem_der(&csr);
        let last = der.len() - 3;
        der[last] ^= 0x55;
        let forged = pem_of("CERTIFICATE REQUEST", &der);
        assert!(ca.sign_agent_csr(&forged, "host-a", Duration::from_secs(60)).is_err());
    }

    #[test]
    fn cert_info_never_panics_on_garbage() {
        for n in 0..200usize {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            assert!(cert_info(&junk).is_err());
        }
        assert_eq!(Identity::from_uri("spiffe://fathom/agent/a/b"), None);
        assert_eq!(Identity::from_uri("spiffe://fathom/node/x"), None);
        assert_eq!(Identity::from_uri("spiffe://other/agent/a"), None);
        assert_eq!(host_of("[::1]:20035"), "::1");
        assert_eq!(host_of("10.0.0.1:1"), "10.0.0.1");
        assert_eq!(host_of("example"), "example");
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64_decode(&body)
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", base64_encode(der))
    }

    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    fn base64_encode(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in s.bytes().filter(|c| *c != b'=') {
            let v = B64.iter().position(|x| *x == c).unwrap() as u32;
            acc = acc << 6 | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}
