//! Enrollment and the agent's side of the control service.
//!
//! On first start (no certificate in `cert_dir`) the agent makes a P-256 key and a CSR
//! for `spiffe://fathom/agent/<agent_id>`, presents its one-time `enroll_token` on the
//! server's control port (trusting only `ca_file`, the cluster CA), and keeps the
//! certificate, key and CA in `cert_dir` (files 0600). From then on the data stream and
//! the control calls are mTLS with that certificate; the token is never needed again.
//!
//! The control loop beats every `interval_secs` the server asks for, reporting the
//! version of the pool config the process runs with. A newer one the server pushes is
//! validated; an invalid one is logged and never reported; a valid one is kept
//! (`<cert_dir>/pushed-config.json`) and the agent restarts itself to run with it (see
//! [`crate::config`]), reporting its version from then on. Once two thirds of the
//! certificate's lifetime have passed it asks for a new one with a new key (`Renew`,
//! over the current identity). The new files replace the old ones atomically and the
//! data channel reconnects with them; the old certificate stays valid until it expires,
//! so nothing in flight is lost.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fathom_proto::control::agent_control_client::AgentControlClient;
use fathom_proto::control::{EnrollRequest, HeartbeatRequest, RenewRequest};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{SenderConfig, SenderStats, Spool};
use crate::config::PushedConfig;

const CERT_FILE: &str = "agent.pem";
const KEY_FILE: &str = "agent.key";
const CA_FILE: &str = "ca.pem";
const STATE_FILE: &str = "enrollment.json";

/// What enrollment gave this agent, kept next to its certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub agent_id: String,
    pub ingest_addr: String,
    pub region: String,
    pub az: String,
    pub pool: String,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// The agent's mTLS identity.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub enrollment: Enrollment,
}

impl Credentials {
    /// A client TLS config: trust the cluster CA only, present this certificate.
    pub fn tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// Whether two thirds of the certificate's lifetime have passed.
    pub fn due_for_renewal(&self, now_ms: u64) -> bool {
        let e = &self.enrollment;
        let life = e.expires_at_ms.saturating_sub(e.issued_at_ms);
        now_ms >= e.issued_at_ms.saturating_add(life / 3 * 2)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `host:port` -> an https URI.
pub fn https_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.replacen("http://", "https://", 1)
    } else {
        format!("https://{addr}")
    }
}

/// A key and CSR for this agent's identity.
pub fn make_csr(agent_id: &str) -> Result<(String, String), String> {
    let err = |e: rcgen::Error| format!("enroll: cannot make a key and CSR: {e}");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, agent_id);
    params.distinguished_name = dn;
    let uri = format!("spiffe://fathom/agent/{agent_id}");
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().map_err(err)?)];
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok((csr.pem().map_err(err)?, key.serialize_pem()))
}

fn write_private(path: &Path, body: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| format!("enroll: cannot write {}: {e}", path.display()))
}

/// The credentials in `dir`, if the agent enrolled before.
pub fn load(dir: &Path) -> Result<Option<Credentials>, String> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| format!("enroll: {}: {e}", p.display()))
    };
    if !dir.join(CERT_FILE).exists() {
        return Ok(None);
    }
    let enrollment: Enrollment = serde_json::from_str(&read(STATE_FILE)?)
        .map_err(|e| format!("enroll: {}: {e}", dir.join(STATE_FILE).display()))?;
    Ok(Some(Credentials {
        cert_pem: read(CERT_FILE)?,
        key_pem: read(KEY_FILE)?,
        ca_pem: read(CA_FILE)?,
        enrollment,
    }))
}

/// Writes the credentials: key and certificate first, the state file last, so that an
/// interrupted write leaves the previous set usable or none at all.
pub fn save(dir: &Path, c: &Credentials) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("enroll: cannot create {}: {e}", dir.display()))?;
    write_private(&dir.join(KEY_FILE), c.key_pem.as_bytes())?;
    write_private(&dir.join(CERT_FILE), c.cert_pem.as_bytes())?;
    write_private(&dir.join(CA_FILE), c.ca_pem.as_bytes())?;
    let state = serde_json::to_vec_pretty(&c.enrollment).map_err(|e| e.to_string())?;
    write_private(&dir.join(STATE_FILE), &state)
}

/// The agent's credentials: those in `cert_dir`, or new ones from enrolling with
/// `enroll_token` at `control_addr`. `None` when neither is configured (plain data
/// channel, for tests and single-host setups).
pub fn ensure(
    cfg: &SenderConfig,
    agent_id: &str,
    host: &str,
) -> Result<Option<Credentials>, String> {
    let dir = PathBuf::from(&cfg.cert_dir);
    if let Some(c) = load(&dir)? {
        if c.enrollment.agent_id != agent_id {
            return Err(format!(
                "enroll: {} holds the certificate of agent {:?}, not {agent_id:?}",
                dir.display(),
                c.enrollment.agent_id
            ));
        }
        return Ok(Some(c));
    }
    if cfg.control_addr.is_empty() {
        return Ok(None);
    }
    if cfg.enroll_token.is_empty() {
        return Err(format!(
            "enroll: not enrolled ({} has no certificate) and [sender] enroll_token is not set",
            dir.display()
        ));
    }
    if cfg.ca_file.is_empty() {
        return Err("enroll: [sender] ca_file (the cluster CA certificate) is not set".into());
    }
    let ca_pem = std::fs::read_to_string(&cfg.ca_file)
        .map_err(|e| format!("enroll: ca_file {}: {e}", cfg.ca_file))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("enroll: runtime: {e}"))?;
    let timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
    let c = rt.block_on(enroll(
        &cfg.control_addr,
        &ca_pem,
        &cfg.enroll_token,
        agent_id,
        host,
        timeout,
    ))?;
    save(&dir, &c)?;
    tracing::info!(agent_id, pool = %c.enrollment.pool, "enrolled; certificate in {}", dir.display());
    Ok(Some(c))
}

async fn enroll(
    control: &str,
    ca_pem: &str,
    token: &str,
    agent_id: &str,
    host: &str,
    timeout: Duration,
) -> Result<Credentials, String> {
    let (csr_pem, key_pem) = make_csr(agent_id)?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    let channel = Endpoint::from_shared(https_uri(control))
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| format!("enroll: control address {control:?}: {e}"))?
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("enroll: cannot reach {control}: {e}"))?;
    let issued_at_ms = now_ms();
    let r = AgentControlClient::new(channel)
        .enroll(EnrollRequest {
            token: token.to_string(),
            csr_pem,
            agent_id: agent_id.to_string(),
            hostname: host.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            arch: std::env::consts::ARCH.to_string(),
        })
        .await
        .map_err(|s| format!("enroll: refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    Ok(Credentials {
        cert_pem: r.cert_pem,
        key_pem,
        ca_pem: r.ca_pem,
        enrollment: Enrollment {
            agent_id: r.agent_id,
            ingest_addr: r.ingest_addr,
            region: r.region,
            az: r.az,
            pool: r.pool,
            issued_at_ms,
            expires_at_ms: r.expires_at_ms,
        },
    })
}

/// Credentials shared by the control loop (which renews them) and the pusher (which
/// reconnects when `generation` moves).
pub struct SharedCredentials {
    pub current: Mutex<Credentials>,
    pub generation: AtomicU64,
}

impl SharedCredentials {
    pub fn get(&self) -> Credentials {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Heartbeats, config push and renewal, until `stop`.
pub(crate) struct ControlLoop {
    pub control_addr: String,
    pub cert_dir: PathBuf,
    pub creds: Arc<SharedCredentials>,
    pub stats: Arc<SenderStats>,
    pub spool: Arc<Spool>,
    pub stop: Arc<AtomicBool>,
    pub timeout: Duration,
    /// The version of the pool config this process runs with (0 = none).
    pub running_version: u64,
    /// Notified once a valid newer pool config is kept: the agent restarts with it.
    pub restart: Arc<tokio::sync::Notify>,
    /// The newer version kept for the restart, or refused (each logged once).
    pub pending_version: Option<u64>,
    pub refused_version: Option<u64>,
}

impl ControlLoop {
    async fn client(&self, c: &Credentials) -> Result<AgentControlClient<Channel>, String> {
        let ch = Endpoint::from_shared(https_uri(&self.control_addr))
            .and_then(|e| e.tls_config(c.tls()))
            .map_err(|e| format!("control: {e}"))?
            .timeout(self.timeout)
            .connect()
            .await
            .map_err(|e| format!("control: cannot reach {}: {e}", self.control_addr))?;
        Ok(AgentControlClient::new(ch))
    }

    pub async fn run(mut self) {
        let mut interval = Duration::from_secs(10);
        let mut client = None;
        let mut generation = u64::MAX;
        while !self.stop.load(Ordering::Acquire) {
            let creds = self.creds.get();
            let g = self.creds.generation.load(Ordering::Acquire);
            if client.is_none() || g != generation {
                match self.client(&creds).await {
                    Ok(c) => {
                        client = Some(c);
                        generation = g;
                    }
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            if let Some(c) = client.as_mut() {
                match self.beat(c, &creds).await {
                    Ok(secs) => interval = Duration::from_secs(u64::from(secs.max(1))),
                    Err(e) => {
                        tracing::warn!("control: {e}");
                        client = None;
                    }
                }
                if let Some(c) = client.as_mut().filter(|_| creds.due_for_renewal(now_ms())) {
                    if let Err(e) = self.renew(c).await {
                        tracing::warn!("control: certificate renewal failed, retrying: {e}");
                    }
                }
            }
            let until = tokio::time::Instant::now() + interval;
            while !self.stop.load(Ordering::Acquire) && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn beat(
        &mut self,
        c: &mut AgentControlClient<Channel>,
        creds: &Credentials,
    ) -> Result<u32, String> {
        let r = c
            .heartbeat(HeartbeatRequest {
                config_version: self.running_version,
                records_sent: self.stats.records_acked.load(Ordering::Relaxed),
                records_dropped: self.stats.records_dropped_queue.load(Ordering::Relaxed),
                spooled_batches: self.spool.len() as u64,
            })
            .await
            .map_err(|s| format!("heartbeat refused ({:?}): {}", s.code(), s.message()))?
            .into_inner();
        if r.config_version != self.running_version && !r.config_body.is_empty() {
            self.pushed(PushedConfig { version: r.config_version, body: r.config_body })?;
        }
        if !r.ingest_addr.is_empty() && r.ingest_addr != creds.enrollment.ingest_addr {
            // Placement moved this agent: the data channel follows (a new generation
            // makes the pusher reconnect); the spool keeps what is not yet acknowledged.
            let mut next = self.creds.get();
            tracing::info!(
                from = %next.enrollment.ingest_addr,
                to = %r.ingest_addr,
                "control: placement moved this agent to another ingest node"
            );
            next.enrollment.ingest_addr = r.ingest_addr.clone();
            self.replace(next, true)?;
        }
        Ok(r.interval_secs)
    }

    /// A pool config other than the running one: refused, or kept and restarted for.
    fn pushed(&mut self, p: PushedConfig) -> Result<(), String> {
        let seen = Some(p.version);
        if self.pending_version == seen || self.refused_version == seen {
            return Ok(());
        }
        if let Err(e) = p.validate() {
            tracing::error!(
                version = p.version,
                running = self.running_version,
                "control: pushed pool config refused, not applied: {e}"
            );
            self.refused_version = seen;
            return Ok(());
        }
        let body = serde_json::to_vec_pretty(&p).map_err(|e| e.to_string())?;
        write_private(&PushedConfig::path(&self.cert_dir), &body)?;
        tracing::info!(
            version = p.version,
            running = self.running_version,
            "control: pool config pushed; restarting to apply it"
        );
        self.pending_version = seen;
        self.restart.notify_one();
        Ok(())
    }

    async fn renew(&self, c: &mut AgentControlClient<Channel>) -> Result<(), String> {
        let creds = self.creds.get();
        let (csr_pem, key_pem) = make_csr(&creds.enrollment.agent_id)?;
        let issued_at_ms = now_ms();
        let r = c
            .renew(RenewRequest { csr_pem })
            .await
            .map_err(|s| format!("renew refused ({:?}): {}", s.code(), s.message()))?
            .into_inner();
        let mut next = creds.clone();
        next.cert_pem = r.cert_pem;
        next.key_pem = key_pem;
        next.ca_pem = r.ca_pem;
        next.enrollment.issued_at_ms = issued_at_ms;
        next.enrollment.expires_at_ms = r.expires_at_ms;
        self.replace(next, true)?;
        tracing::info!("control: certificate renewed");
        Ok(())
    }

    /// Saves and publishes new credentials; a new identity makes every channel reconnect.
    fn replace(&self, next: Credentials, new_identity: bool) -> Result<(), String> {
        save(&self.cert_dir, &next)?;
        *self.creds.current.lock().unwrap_or_else(|p| p.into_inner()) = next;
        if new_identity {
            self.creds.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        let c = Credentials {
            cert_pem: String::new(),
            key_pem: String::new(),
            ca_pem: String::new(),
            enrollment: Enrollment {
                agent_id: "a".into(),
                ingest_addr: String::new(),
                region: String::new(),
                az: String::new(),
                pool: String::new(),
                issued_at_ms: 1_000,
                expires_at_ms: 4_000,
            },
        };
        assert!(!c.due_for_renewal(2_999));
        assert!(c.due_for_renewal(3_000));
    }

    #[test]
    fn without_a_certificate_enrollment_needs_a_token_and_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SenderConfig {
            cert_dir: dir.path().join("certs").display().to_string(),
            ..SenderConfig::default()
        };
        // Nothing configured: the plain data channel.
        assert!(ensure(&cfg, "a", "h").unwrap().is_none());
        cfg.control_addr = "127.0.0.1:1".into();
        assert!(ensure(&cfg, "a", "h").unwrap_err().contains("enroll_token"));
        cfg.enroll_token = "fathom-enroll-x".into();
        assert!(ensure(&cfg, "a", "h").unwrap_err().contains("ca_file"));
        // Saved credentials are found again, and only for the agent they name.
        let (csr, key) = make_csr("a").unwrap();
        assert!(csr.contains("CERTIFICATE REQUEST"));
        let c = Credentials {
            cert_pem: "cert".into(),
            key_pem: key,
            ca_pem: "ca".into(),
            enrollment: Enrollment {
                agent_id: "a".into(),
                ingest_addr: "10.0.0.1:20033".into(),
                region: "r".into(),
                az: "z".into(),
                pool: "p".into(),
                issued_at_ms: 1,
                expires_at_ms: 2,
            },
        };
        save(Path::new(&cfg.cert_dir), &c).unwrap();
        let back = ensure(&cfg, "a", "h").unwrap().unwrap();
        assert_eq!(back.enrollment, c.enrollment);
        assert!(ensure(&cfg, "b", "h").unwrap_err().contains("not \"b\""));
    }
}
