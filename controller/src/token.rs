//! One-time enrollment tokens.
//!
//! The secret is shown once, when the token is made; the cluster keeps only its
//! SHA-256 (the token id), so a copy of the metadata cannot be used to enroll.
//! Whether a token is still usable (not expired, not revoked, not used by another
//! agent) is decided by the replicated state machine (`Command::ConsumeToken`), so
//! two nodes can never both accept the same token.

use std::time::Duration;

use fathom_cluster::state::EnrollmentToken;
use sha2::{Digest, Sha256};

use crate::ca::hex;

/// Every secret starts with this, so a leaked one is easy to recognise in logs and scanners.
pub const SECRET_PREFIX: &str = "fathom-enroll-";

/// A fresh secret: the prefix and 32 random bytes in hex.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)?;
    Ok(format!("{SECRET_PREFIX}{}", hex(&raw)))
}

/// The id under which a secret is stored: hex SHA-256 of the whole secret.
pub fn token_id(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A new token for agents of one pool, valid for `ttl` from `now_ms` (Unix ms).
/// Returns the secret (to give to the operator) and the record to replicate.
pub fn new_token(
    region: &str,
    az: &str,
    pool: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<(String, EnrollmentToken), getrandom::Error> {
    let secret = generate_secret()?;
    let token = EnrollmentToken {
        id: token_id(&secret),
        region: region.to_string(),
        az: az.to_string(),
        pool: pool.to_string(),
        expires_at_ms: now_ms.saturating_add(ttl.as_millis().min(u64::MAX as u128) as u64),
        used_by: None,
        revoked: false,
    };
    Ok((secret, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_only_their_hash_is_kept() {
        let (s1, t1) = new_token("r", "z", "p", Duration::from_secs(3600), 1_000).unwrap();
        let (s2, t2) = new_token("r", "z", "p", Duration::from_secs(3600), 1_000).unwrap();
        assert_ne!(s1, s2);
        assert!(s1.starts_with(SECRET_PREFIX) && s1.len() == SECRET_PREFIX.len() + 64);
        assert_eq!(t1.id, token_id(&s1));
        assert_ne!(t1.id, t2.id);
        assert!(!t1.id.contains(&s1[SECRET_PREFIX.len()..]));
        assert_eq!(t1.expires_at_ms, 1_000 + 3_600_000);
        assert_eq!((t1.region.as_str(), t1.az.as_str(), t1.pool.as_str()), ("r", "z", "p"));
    }

    #[test]
    fn token_id_is_sha256_hex() {
        assert_eq!(
            token_id("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
