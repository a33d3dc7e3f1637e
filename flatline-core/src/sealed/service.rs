//! Which server certificate signs, issuing it on first use, rotating it, and issuing sender certificates.
//!
//! Server certificates never expire for clients (libsignal checks only the trust root and the revocation list), so
//! a sender certificate stays valid until its own expiry whichever server certificate signed it. Rotation only
//! changes which certificate signs new sender certificates; a retired one is kept (listed, its key derivable) until
//! every sender certificate it signed has expired, then pruned.

use std::time::Duration;

use crate::crypto::PrivateKey;
use crate::random::{SecureRandom, random_array};
use crate::store::{ServerStateStore, StoreError};
use crate::time::Timestamp;

use super::{
    CertificateError, CertificateSigner, RESERVED_SERVER_CERTIFICATE_IDS, SenderCertificate,
    SenderIdentity, SenderUuidForm, ServerCertificate, ServerCertificateRecord,
};

/// Why no signer could be had.
#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored certificate does not belong to this trust root (the root key file was swapped), or is corrupt.
    #[error("stored server certificate {id}: {source}")]
    Certificate {
        /// Its id.
        id: u32,
        /// Why.
        source: CertificateError,
    },
    /// Concurrent writers kept winning (practically unreachable).
    #[error("could not store a server certificate")]
    Contended,
}

fn fresh_id(rng: &dyn SecureRandom, taken: &[ServerCertificateRecord]) -> u32 {
    loop {
        let id = u32::from_be_bytes(random_array(rng));
        if !RESERVED_SERVER_CERTIFICATE_IDS.contains(&id) && !taken.iter().any(|r| r.id == id) {
            return id;
        }
    }
}

fn signer_of(
    record: &ServerCertificateRecord,
    root: &PrivateKey,
) -> Result<CertificateSigner, SealedError> {
    let certificate = ServerCertificate::deserialize(&record.certificate)
        .and_then(|c| CertificateSigner::from_stored(c, root))
        .map_err(|source| SealedError::Certificate {
            id: record.id,
            source,
        })?;
    Ok(certificate)
}

fn record_of(signer: &CertificateSigner, now: Timestamp) -> ServerCertificateRecord {
    ServerCertificateRecord {
        id: signer.certificate.id(),
        certificate: signer.certificate.serialized().to_vec(),
        created_at: now,
        retired_at: None,
    }
}

/// The current server certificate with its key; the first call on a fresh instance issues and stores one (of
/// concurrent first callers, on any process, one wins and all use its certificate). When the current certificate
/// was issued by another trust root (the operator replaced the root key on purpose, docs/TRUST.md), a new one is
/// issued under this root and replaces it.
pub async fn current_signer(
    store: &dyn ServerStateStore,
    root: &PrivateKey,
    rng: &dyn SecureRandom,
    now: Timestamp,
) -> Result<CertificateSigner, SealedError> {
    for _ in 0..4 {
        let all = store.server_certificates().await?;
        let current = all.iter().find(|r| r.retired_at.is_none());
        let replace = match current.map(|c| signer_of(c, root)) {
            Some(Ok(signer)) => return Ok(signer),
            Some(Err(_)) => true,
            None => false,
        };
        let signer = CertificateSigner::issue(fresh_id(rng, &all), root, rng)
            .map_err(|source| SealedError::Certificate { id: 0, source })?;
        if store
            .add_server_certificate(&record_of(&signer, now), replace)
            .await?
        {
            return Ok(signer);
        }
    }
    Err(SealedError::Contended)
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    /// The new current certificate.
    pub signer: CertificateSigner,
    /// The certificate it replaced, if there was one.
    pub retired: Option<u32>,
    /// How many certificates retired long enough ago were deleted.
    pub pruned: u64,
}

/// Issues a new current server certificate and retires the old one; certificates retired more than `keep` ago
/// (the longest sender-certificate lifetime) are deleted, since nothing they signed is still valid.
pub async fn rotate(
    store: &dyn ServerStateStore,
    root: &PrivateKey,
    rng: &dyn SecureRandom,
    now: Timestamp,
    keep: Duration,
) -> Result<Rotation, SealedError> {
    for _ in 0..4 {
        let all = store.server_certificates().await?;
        let retired = all.iter().find(|r| r.retired_at.is_none()).map(|r| r.id);
        let signer = CertificateSigner::issue(fresh_id(rng, &all), root, rng)
            .map_err(|source| SealedError::Certificate { id: 0, source })?;
        if store
            .add_server_certificate(&record_of(&signer, now), true)
            .await?
        {
            let pruned = store.prune_server_certificates(now.minus(keep)).await?;
            return Ok(Rotation {
                signer,
                retired,
                pruned,
            });
        }
    }
    Err(SealedError::Contended)
}

/// The sender certificate of `GET /v1/certificate/delivery`: valid from `now` for `lifetime`, no phone number,
/// the ACI as a string (field 6) and the signer embedded (field 5), which every libsignal version reads.
pub fn sender_certificate(
    signer: &CertificateSigner,
    sender: &SenderIdentity,
    now: Timestamp,
    lifetime: Duration,
    rng: &dyn SecureRandom,
) -> SenderCertificate {
    SenderCertificate::issue(
        sender,
        now.plus(lifetime),
        SenderUuidForm::String,
        signer,
        rng,
    )
}
