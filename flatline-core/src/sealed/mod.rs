//! Sealed sender (API.md §11, M§3, M§2.5): the certificates clients trust and the multi-recipient message format.
//!
//! * [`certificate`]: `ServerCertificate` / `SenderCertificate` protobufs and the typed certificates. The instance
//!   sealed-sender key (the manifest's `trustRoots.sealedSender`) is the trust root; it signs server certificates,
//!   whose keys (derived from the root and the id, never stored) sign the sender certificates of
//!   `GET /v1/certificate/delivery`.
//! * [`multi_recipient`]: the SSv2 SentMessage parser of `PUT /v1/messages/multi_recipient`.
//! * [`service`]: which server certificate signs now, issuing on first use, rotation, sender certificates.

pub mod certificate;
pub mod multi_recipient;
pub mod service;

use crate::time::Timestamp;

pub use certificate::{
    CertificateError, CertificateSigner, RESERVED_SERVER_CERTIFICATE_IDS, SenderCertificate,
    SenderIdentity, SenderUuidForm, ServerCertificate,
};
pub use multi_recipient::{ParseError, Recipient, RecipientDevice, RecipientsError, SentMessage};
pub use service::*;

/// A server certificate as the store keeps it: public data only (the private key is derived from the trust root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificateRecord {
    /// The certificate id (unique).
    pub id: u32,
    /// The serialized `ServerCertificate`.
    pub certificate: Vec<u8>,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When a newer certificate replaced it; `None` for the current one (at most one is current).
    pub retired_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests;
