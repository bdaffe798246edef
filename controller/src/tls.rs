//! rustls configurations for every port, and the check that makes a revocation bite at
//! once everywhere.
//!
//! Trust is the cluster CA alone. A client certificate is checked twice:
//!
//! 1. at the handshake, by [`PeerVerifier`]: chain to the CA (webpki), then the
//!    replicated metadata (not revoked; an agent certificate must be one the CA recorded
//!    issuing);
//! 2. on every RPC, by [`Authority::peer`]: the same metadata check, so that a revoke
//!    also cuts connections that were established before it.
//!
//! Both read the local replica of the metadata, so a revoke takes effect on a node as
//! soon as that node applies the entry (one Raft round trip), with no CRL to distribute.
//! The cluster port serves before the metadata is up: it takes node certificates of the
//! CA, and checks them against the replica once one is attached ([`Revocations`]).
//!
//! A node presents its certificate through a [`NodeCert`], which every server and client
//! config of the node resolves at each handshake: renewing it swaps the certificate
//! without rebuilding a config or touching open connections.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use fathom_cluster::{MetaNode, MetaRouter, WeakMetaNode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use tonic::{Request, Status};

use crate::ca::{cert_info, CaError, CertInfo, ClusterCa, Identity, Issued};

/// The crypto provider for every config: ring (light to build, no C toolchain needs
/// beyond what ring brings).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key: what a node presents.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl TlsIdentity {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<TlsIdentity, CaError> {
        use rustls::pki_types::pem::PemObject;
        let chain = crate::ca::pem_certs(cert_pem)?;
        if chain.is_empty() {
            return Err(CaError::BadCert("no certificate in PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| CaError::BadCert(format!("bad private key PEM: {e}")))?;
        Ok(TlsIdentity { chain, key: Arc::new(key) })
    }

    pub fn from_issued(issued: &Issued) -> Result<TlsIdentity, CaError> {
        Self::from_pem(&issued.cert_pem, &issued.key_pem)
    }
}

/// This node's certificate as every TLS config of the node presents it; [`replace`]
/// (Self::replace) takes effect at the next handshake.
pub struct NodeCert {
    current: ArcSwap<Presented>,
}

struct Presented {
    identity: TlsIdentity,
    certified: Arc<CertifiedKey>,
    serial: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert").field("serial", &self.current.load().serial).finish()
    }
}

impl NodeCert {
    pub fn new(identity: TlsIdentity) -> Result<Arc<NodeCert>, CaError> {
        Ok(Arc::new(NodeCert { current: ArcSwap::from_pointee(Presented::new(identity)?) }))
    }

    /// Presents `identity` from the next handshake on.
    pub fn replace(&self, identity: TlsIdentity) -> Result<(), CaError> {
        self.current.store(Arc::new(Presented::new(identity)?));
        Ok(())
    }

    /// The certificate and key presented now.
    pub fn identity(&self) -> TlsIdentity {
        self.current.load().identity.clone()
    }

    /// The serial (hex) of the certificate presented now.
    pub fn serial(&self) -> String {
        self.current.load().serial.clone()
    }
}

impl Presented {
    fn new(identity: TlsIdentity) -> Result<Presented, CaError> {
        let leaf = identity.chain.first().ok_or(CaError::BadCert("empty chain".into()))?;
        let serial = cert_info(leaf)?.serial;
        let key = provider()
            .key_provider
            .load_private_key(identity.key.clone_key())
            .map_err(|e| CaError::BadCert(format!("private key: {e}")))?;
        let certified = Arc::new(CertifiedKey::new(identity.chain.clone(), key));
        Ok(Presented { identity, certified, serial })
    }
}

impl ResolvesServerCert for NodeCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }
}

impl ResolvesClientCert for NodeCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The replica the cluster port checks node certificates against, once there is one:
/// the port serves before its `MetaNode` exists, and a node that could not reach the
/// metadata could not learn of a revocation anyway. Holds the node weakly (the node's
/// own port holds this).
#[derive(Clone, Default)]
pub struct Revocations {
    meta: Arc<OnceLock<WeakMetaNode>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").field("attached", &self.meta.get().is_some()).finish()
    }
}

impl Revocations {
    /// Checks against `meta` (the global group, where node certificates are recorded)
    /// from now on. Only the first call counts.
    pub fn attach(&self, meta: &MetaNode) {
        let _ = self.meta.set(meta.downgrade());
    }

    /// The attached node, while it runs.
    pub fn meta(&self) -> Option<MetaNode> {
        self.meta.get().and_then(|w| w.upgrade())
    }

    pub fn revoked(&self, serial: &str) -> bool {
        self.meta().is_some_and(|m| m.read(|s| s.cert_revoked(serial)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    BadCert(#[from] CaError),
    #[error("certificate {serial} of {subject} is revoked")]
    Revoked { serial: String, subject: String },
    #[error("certificate {serial} was never issued to {subject}")]
    Unknown { serial: String, subject: String },
}

/// Decides whether a peer certificate (already chained to the CA) may be used, from the
/// local replica of the metadata.
#[derive(Clone)]
pub struct Authority {
    meta: MetaRouter,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("node", &self.meta.id()).finish()
    }
}

impl Authority {
    /// Checks against both groups: agents' certificates are recorded in their region's
    /// group, the others in the global one.
    pub fn new(meta: impl Into<MetaRouter>) -> Authority {
        Authority { meta: meta.into() }
    }

    /// Identity and serial of an acceptable certificate, or why it is refused.
    pub fn check_der(&self, der: &[u8]) -> Result<CertInfo, AuthError> {
        let info = cert_info(der)?;
        let subject = info.identity.subject();
        let known = self.meta.read_both(|g, r| {
            g.certs.contains_key(&info.serial) || r.certs.contains_key(&info.serial)
        });
        let revoked = self.meta.cert_revoked(&info.serial);
        if revoked {
            return Err(AuthError::Revoked { serial: info.serial, subject });
        }
        // Agent certificates are recorded before they are handed out; one that is not
        // was never given to an agent (or its record was pruned after it expired).
        if matches!(info.identity, Identity::Agent(_)) && !known {
            return Err(AuthError::Unknown { serial: info.serial, subject });
        }
        Ok(info)
    }

    /// The checked identity of the peer of this request: `UNAUTHENTICATED` without a
    /// client certificate, `PERMISSION_DENIED` when it is revoked.
    #[allow(clippy::result_large_err)]
    pub fn peer<T>(&self, req: &Request<T>) -> Result<CertInfo, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        self.check_der(leaf).map_err(|e| Status::permission_denied(e.to_string()))
    }

    /// A tonic interceptor letting through only peers that `allow` accepts, checked per
    /// request (so a revoke cuts open connections too), e.g. for the admin service on
    /// the control port: `AdminServer::with_interceptor(svc, authority.interceptor(|i|
    /// matches!(i, Identity::Admin(_))))`. The checked [`CertInfo`] is left in the
    /// request's extensions for the handler.
    pub fn interceptor(
        &self,
        allow: fn(&Identity) -> bool,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let authority = self.clone();
        // tonic's interceptor signature fixes the error type.
        #[allow(clippy::result_large_err)]
        move |mut req: Request<()>| {
            let info = authority.peer(&req)?;
            if !allow(&info.identity) {
                return Err(Status::permission_denied(format!(
                    "{:?} may not call this service",
                    info.identity
                )));
            }
            req.extensions_mut().insert(info);
            Ok(req)
        }
    }

    /// [`peer`](Self::peer), and the peer must be an agent: its id.
    #[allow(clippy::result_large_err)]
    pub fn agent<T>(&self, req: &Request<T>) -> Result<(String, CertInfo), Status> {
        let info = self.peer(req)?;
        match &info.identity {
            Identity::Agent(id) => Ok((id.clone(), info)),
            other => Err(Status::permission_denied(format!("{other:?} is not an agent"))),
        }
    }
}

/// webpki chain validation against the CA, then [`Authority::check_der`] (or, on the
/// cluster port, which serves before the metadata is readable: node identities, not
/// revoked once [`Revocations`] has a replica).
#[derive(Debug)]
pub struct PeerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    check: PeerCheck,
}

#[derive(Debug)]
enum PeerCheck {
    Authority(Authority),
    Nodes(Revocations),
}

impl PeerVerifier {
    /// `optional`: a client may connect without a certificate (the control port, for
    /// Enroll); one that presents a certificate must still pass every check.
    pub fn new(
        roots: RootCertStore,
        authority: Authority,
        optional: bool,
    ) -> Result<Arc<PeerVerifier>, rustls::Error> {
        let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let b = if optional { b.allow_unauthenticated() } else { b };
        let inner = b.build().map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Arc::new(PeerVerifier { inner, check: PeerCheck::Authority(authority) }))
    }

    /// Client certificates from the CA naming a node (`spiffe://fathom/node/<id>`) and
    /// not revoked in `revocations`.
    pub fn nodes_only(
        roots: RootCertStore,
        revocations: Revocations,
    ) -> Result<Arc<PeerVerifier>, rustls::Error> {
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Arc::new(PeerVerifier { inner, check: PeerCheck::Nodes(revocations) }))
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let authority = match &self.check {
            PeerCheck::Authority(authority) => authority,
            PeerCheck::Nodes(revocations) => {
                return match cert_info(end_entity) {
                    Ok(CertInfo { identity: Identity::Node(_), serial, .. }) => {
                        if revocations.revoked(&serial) {
                            tracing::debug!("tls: refusing revoked node certificate {serial}");
                            return Err(rustls::Error::InvalidCertificate(
                                CertificateError::Revoked,
                            ));
                        }
                        Ok(ok)
                    }
                    _ => Err(rustls::Error::InvalidCertificate(
                        CertificateError::ApplicationVerificationFailure,
                    )),
                };
            }
        };
        match authority.check_der(end_entity) {
            Ok(_) => Ok(ok),
            Err(AuthError::Revoked { .. }) => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Err(e) => {
                tracing::debug!("tls: refusing client certificate: {e}");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn server_config(
    verifier: Arc<PeerVerifier>,
    me: &Arc<NodeCert>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(me.clone());
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The control port (20035): clients without a certificate are let in (they can only
/// Enroll; every other call asks [`Authority::peer`]), clients with one must pass.
pub fn control_server_config(
    ca: &ClusterCa,
    me: &Arc<NodeCert>,
    authority: Authority,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config(PeerVerifier::new(ca.roots(), authority, true)?, me, &[b"h2"])
}

/// A port that requires a client certificate from the CA: agent data (20033), admin
/// gRPC, and the Raft/cluster RPC (20040; pass `&[b"http/1.1"]` there).
pub fn mtls_server_config(
    ca: &ClusterCa,
    me: &Arc<NodeCert>,
    authority: Authority,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config(PeerVerifier::new(ca.roots(), authority, false)?, me, alpn)
}

/// A client that trusts only `ca_pem`, presenting `me` when given (node-to-node calls,
/// fathomctl, an enrolled agent).
pub fn client_config(
    ca_pem: &str,
    me: Option<&TlsIdentity>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, CaError> {
    let b = client_builder(ca_pem)?;
    let mut cfg = match me {
        Some(id) => b
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| CaError::BadCert(format!("client identity: {e}")))?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A client of a node that trusts only `ca_pem` and presents the node's current
/// certificate.
pub fn node_client_config(
    ca_pem: &str,
    me: &Arc<NodeCert>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, CaError> {
    let mut cfg = client_builder(ca_pem)?.with_client_cert_resolver(me.clone());
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

fn client_builder(
    ca_pem: &str,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, CaError> {
    let mut roots = RootCertStore::empty();
    for c in crate::ca::pem_certs(ca_pem)? {
        roots.add(c).map_err(|e| CaError::BadCert(format!("CA certificate: {e}")))?;
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CaError::BadCert(e.to_string()))?
        .with_root_certificates(roots))
}

/// The cluster port (20040, HTTP/1.1): only nodes of this CA whose certificate is not
/// revoked in `revocations`. It needs no metadata, so it can be built before the
/// `MetaNode` that serves it (attach that node to `revocations` once it runs).
pub fn raft_server_config(
    ca: &ClusterCa,
    me: &Arc<NodeCert>,
    revocations: Revocations,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config(PeerVerifier::nodes_only(ca.roots(), revocations)?, me, &[b"http/1.1"])
}

/// The client side of node-to-node calls: this node's certificate, trusting only the CA
/// (for `fathom_cluster::network::Transport::with_tls`).
pub fn raft_client_config(ca_pem: &str, me: &Arc<NodeCert>) -> Result<ClientConfig, CaError> {
    node_client_config(ca_pem, me, &[b"http/1.1"])
}
