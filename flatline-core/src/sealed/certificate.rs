//! Sealed-sender certificates (M§3.2, M§3.3): the protobufs of libsignal's `sealed_sender.proto`, derived by hand,
//! and the typed certificates the server issues and a client validates.

use hkdf::Hkdf;
use prost::Message as _;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroize;

use crate::crypto::{PUBLIC_KEY_LEN, PrivateKey, PublicKey};
use crate::ids::{Aci, DeviceId};
use crate::random::SecureRandom;
use crate::time::Timestamp;

/// The wire messages exactly as libsignal's `rust/protocol/src/proto/sealed_sender.proto` (proto2: presence
/// matters). The server encodes these; clients decode them with libsignal. Named `<Message>Message` and
/// `<Message>Body` (the nested `Certificate`), so no name repeats a domain type's.
pub mod proto {
    /// `ServerCertificate`: an inner `Certificate` and the trust root's XEdDSA signature over its bytes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerCertificateMessage {
        /// The serialized [`ServerCertificateBody`].
        #[prost(bytes = "vec", optional, tag = "1")]
        pub certificate: Option<Vec<u8>>,
        /// XEdDSA (64 bytes) by the trust root over `certificate`.
        #[prost(bytes = "vec", optional, tag = "2")]
        pub signature: Option<Vec<u8>>,
    }

    /// `ServerCertificate.Certificate`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerCertificateBody {
        /// The certificate id.
        #[prost(uint32, optional, tag = "1")]
        pub id: Option<u32>,
        /// The server's 33-byte Curve25519 public key (`0x05` prefix).
        #[prost(bytes = "vec", optional, tag = "2")]
        pub key: Option<Vec<u8>>,
    }

    /// `SenderCertificate`: an inner `Certificate` and the server certificate key's XEdDSA signature over it.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SenderCertificateMessage {
        /// The serialized [`SenderCertificateBody`].
        #[prost(bytes = "vec", optional, tag = "1")]
        pub certificate: Option<Vec<u8>>,
        /// XEdDSA (64 bytes) by the signer's key over `certificate`.
        #[prost(bytes = "vec", optional, tag = "2")]
        pub signature: Option<Vec<u8>>,
    }

    /// `SenderCertificate.Certificate`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SenderCertificateBody {
        /// The sender's phone number. Flatline never sets it.
        #[prost(string, optional, tag = "1")]
        pub sender_e164: Option<String>,
        /// The sending device.
        #[prost(uint32, optional, tag = "2")]
        pub sender_device: Option<u32>,
        /// Expiry, milliseconds since the epoch.
        #[prost(fixed64, optional, tag = "3")]
        pub expires: Option<u64>,
        /// The sender's 33-byte ACI identity key.
        #[prost(bytes = "vec", optional, tag = "4")]
        pub identity_key: Option<Vec<u8>>,
        /// `oneof senderUuid`.
        #[prost(oneof = "SenderUuid", tags = "6, 7")]
        pub sender_uuid: Option<SenderUuid>,
        /// `oneof signer`.
        #[prost(oneof = "Signer", tags = "5, 8")]
        pub signer: Option<Signer>,
    }

    /// `oneof senderUuid`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum SenderUuid {
        /// The hyphenated ACI (what every libsignal version reads).
        #[prost(string, tag = "6")]
        UuidString(String),
        /// The 16 raw ACI bytes (libsignal ≥ 0.80).
        #[prost(bytes, tag = "7")]
        UuidBytes(Vec<u8>),
    }

    /// `oneof signer`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Signer {
        /// The embedded, serialized `ServerCertificate` (what a self-hosted server must send).
        #[prost(bytes, tag = "5")]
        Certificate(Vec<u8>),
        /// A reference to a certificate compiled into libsignal (only Signal's own ids resolve).
        #[prost(uint32, tag = "8")]
        Id(u32),
    }
}

/// Server certificate ids a Flatline instance never uses: libsignal's compiled-in staging (2), production (3) and
/// test (`0x7357C357`) certificates, and its revoked id (`0xDEADC357`).
pub const RESERVED_SERVER_CERTIFICATE_IDS: [u32; 4] = [2, 3, 0x7357_C357, 0xDEAD_C357];

/// The server certificate id libsignal treats as revoked.
pub const REVOKED_SERVER_CERTIFICATE_ID: u32 = 0xDEAD_C357;

/// Why certificate bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Not the protobuf, or a required field is missing (libsignal: `InvalidProtobufEncoding`).
    #[error("certificate is not a valid protobuf or lacks a required field")]
    Malformed,
    /// A key that is not a 33-byte `0x05` Curve25519 key.
    #[error("certificate holds an invalid public key")]
    BadKey,
    /// A device id outside 1..=127.
    #[error("certificate holds an invalid device id")]
    BadDevice,
    /// The signer is referenced by id; only embedded signers can be checked here.
    #[error("certificate references its signer by id {0}")]
    SignerReference(u32),
    /// A server certificate id Flatline never issues.
    #[error("server certificate id {0:#x} is reserved")]
    ReservedId(u32),
}

/// A server certificate: an id and a server key, signed by the instance's sealed-sender trust root.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    id: u32,
    key: PublicKey,
    certificate: Vec<u8>,
    signature: Vec<u8>,
    serialized: Vec<u8>,
}

impl std::fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ServerCertificate {
    /// Signs `Certificate{id, key}` with the trust root (XEdDSA, fresh nonce from `rng`). Reserved ids are refused.
    pub fn issue(
        id: u32,
        key: &PublicKey,
        trust_root: &PrivateKey,
        rng: &dyn SecureRandom,
    ) -> Result<Self, CertificateError> {
        if RESERVED_SERVER_CERTIFICATE_IDS.contains(&id) {
            return Err(CertificateError::ReservedId(id));
        }
        let certificate = proto::ServerCertificateBody {
            id: Some(id),
            key: Some(key.serialize().to_vec()),
        }
        .encode_to_vec();
        let signature = trust_root.sign(&certificate, rng).to_vec();
        let serialized = proto::ServerCertificateMessage {
            certificate: Some(certificate.clone()),
            signature: Some(signature.clone()),
        }
        .encode_to_vec();
        Ok(ServerCertificate {
            id,
            key: *key,
            certificate,
            signature,
            serialized,
        })
    }

    /// Parses a serialized `ServerCertificate` as libsignal does (every field required; the signature is not
    /// checked here, see [`ServerCertificate::validate`]).
    pub fn deserialize(bytes: &[u8]) -> Result<Self, CertificateError> {
        let outer = proto::ServerCertificateMessage::decode(bytes)
            .map_err(|_| CertificateError::Malformed)?;
        let (Some(certificate), Some(signature)) = (outer.certificate, outer.signature) else {
            return Err(CertificateError::Malformed);
        };
        let inner = proto::ServerCertificateBody::decode(certificate.as_slice())
            .map_err(|_| CertificateError::Malformed)?;
        let (Some(id), Some(key)) = (inner.id, inner.key) else {
            return Err(CertificateError::Malformed);
        };
        let key = PublicKey::from_bytes(&key).map_err(|_| CertificateError::BadKey)?;
        Ok(ServerCertificate {
            id,
            key,
            certificate,
            signature,
            serialized: bytes.to_vec(),
        })
    }

    /// libsignal's check: the id is not revoked and the signature verifies under one of `trust_roots` (every root
    /// is tried, so the time does not depend on which one matched).
    pub fn validate(&self, trust_roots: &[PublicKey]) -> bool {
        if self.id == REVOKED_SERVER_CERTIFICATE_ID {
            return false;
        }
        let mut any = Choice::from(0);
        for root in trust_roots {
            any |= Choice::from(u8::from(
                root.verify_signature(&self.certificate, &self.signature),
            ));
        }
        any.into()
    }

    /// The certificate id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The server key that signs sender certificates.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The serialized inner `Certificate` (what the trust root signed).
    pub fn certificate_data(&self) -> &[u8] {
        &self.certificate
    }

    /// The trust root's signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The serialized `ServerCertificate`.
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}

/// Derives the private key of server certificate `id` from the trust root: HKDF-SHA256 with the root's private key
/// as input keying material and the id in the info. The database then holds only public data (the certificate),
/// and every process that has the root key file can sign with every stored certificate.
pub fn server_certificate_private_key(trust_root: &PrivateKey, id: u32) -> PrivateKey {
    const SALT: &[u8] = b"flatline sealed sender server certificate key v1";
    let mut ikm = trust_root.serialize();
    let hk = Hkdf::<Sha256>::new(Some(SALT), &ikm);
    ikm.zeroize();
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's output limit, so `expand` cannot fail.
    if hk.expand(&id.to_be_bytes(), &mut okm).is_err() {
        okm = [0u8; 32];
    }
    let key = PrivateKey::from_array(okm);
    okm.zeroize();
    key
}

/// A server certificate with the private key that signs sender certificates under it.
#[derive(Clone)]
pub struct CertificateSigner {
    /// The certificate embedded in every sender certificate.
    pub certificate: ServerCertificate,
    /// Its private key.
    pub key: PrivateKey,
}

impl std::fmt::Debug for CertificateSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateSigner")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl CertificateSigner {
    /// Issues a new server certificate with id `id` and the key derived for it from the trust root.
    pub fn issue(
        id: u32,
        trust_root: &PrivateKey,
        rng: &dyn SecureRandom,
    ) -> Result<Self, CertificateError> {
        let key = server_certificate_private_key(trust_root, id);
        let certificate = ServerCertificate::issue(id, &key.public_key(), trust_root, rng)?;
        Ok(CertificateSigner { certificate, key })
    }

    /// A stored server certificate with its derived key, if the certificate was issued by this trust root for
    /// this key (a certificate of another root or key is refused rather than used).
    pub fn from_stored(
        certificate: ServerCertificate,
        trust_root: &PrivateKey,
    ) -> Result<Self, CertificateError> {
        let key = server_certificate_private_key(trust_root, certificate.id());
        let derived = key.public_key();
        let same_key: bool = derived
            .serialize()
            .ct_eq(&certificate.key().serialize())
            .into();
        if !same_key || !certificate.validate(&[trust_root.public_key()]) {
            return Err(CertificateError::BadKey);
        }
        Ok(CertificateSigner { certificate, key })
    }
}

/// How the sender's ACI is written in a sender certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderUuidForm {
    /// Field 6, the hyphenated string: every libsignal version reads it (M§3.1 suggestion; the default).
    String,
    /// Field 7, 16 raw bytes: libsignal ≥ 0.80 only.
    Bytes,
}

/// What a sender certificate vouches for: an ACI, one of its devices and the account's ACI identity key.
/// There is deliberately no phone number and no principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderIdentity {
    /// The sender's account.
    pub aci: Aci,
    /// The sending device.
    pub device: DeviceId,
    /// The account's ACI identity key.
    pub identity_key: PublicKey,
}

/// A sender certificate: the sender's identity and an expiry, signed by a server certificate's key, with the
/// server certificate embedded.
#[derive(Clone, PartialEq, Eq)]
pub struct SenderCertificate {
    sender: SenderIdentity,
    sender_e164: Option<String>,
    expires: u64,
    signer: ServerCertificate,
    certificate: Vec<u8>,
    signature: Vec<u8>,
    serialized: Vec<u8>,
}

impl std::fmt::Debug for SenderCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderCertificate")
            .field("sender", &self.sender)
            .field("expires", &self.expires)
            .field("signer", &self.signer.id())
            .finish_non_exhaustive()
    }
}

impl SenderCertificate {
    /// Issues a certificate for `sender` valid until `expires` (inclusive, as libsignal compares), signed by
    /// `signer` with its server certificate embedded (field 5).
    pub fn issue(
        sender: &SenderIdentity,
        expires: Timestamp,
        form: SenderUuidForm,
        signer: &CertificateSigner,
        rng: &dyn SecureRandom,
    ) -> Self {
        use proto::{SenderUuid, Signer};
        let expires = u64::try_from(expires.as_millis()).unwrap_or(0);
        let sender_uuid = match form {
            SenderUuidForm::String => SenderUuid::UuidString(sender.aci.to_string()),
            SenderUuidForm::Bytes => SenderUuid::UuidBytes(sender.aci.as_bytes().to_vec()),
        };
        let certificate = proto::SenderCertificateBody {
            sender_e164: None,
            sender_device: Some(u32::from(sender.device.get())),
            expires: Some(expires),
            identity_key: Some(sender.identity_key.serialize().to_vec()),
            sender_uuid: Some(sender_uuid),
            signer: Some(Signer::Certificate(
                signer.certificate.serialized().to_vec(),
            )),
        }
        .encode_to_vec();
        let signature = signer.key.sign(&certificate, rng).to_vec();
        let serialized = proto::SenderCertificateMessage {
            certificate: Some(certificate.clone()),
            signature: Some(signature.clone()),
        }
        .encode_to_vec();
        SenderCertificate {
            sender: sender.clone(),
            sender_e164: None,
            expires,
            signer: signer.certificate.clone(),
            certificate,
            signature,
            serialized,
        }
    }

    /// Parses a serialized `SenderCertificate` as libsignal does: every field but the phone number is required,
    /// either uuid form is accepted, and the signer must be embedded.
    pub fn deserialize(bytes: &[u8]) -> Result<Self, CertificateError> {
        use proto::{SenderUuid, Signer};
        let outer = proto::SenderCertificateMessage::decode(bytes)
            .map_err(|_| CertificateError::Malformed)?;
        let (Some(certificate), Some(signature)) = (outer.certificate, outer.signature) else {
            return Err(CertificateError::Malformed);
        };
        let inner = proto::SenderCertificateBody::decode(certificate.as_slice())
            .map_err(|_| CertificateError::Malformed)?;
        let (Some(device), Some(expires), Some(key), Some(uuid), Some(signer)) = (
            inner.sender_device,
            inner.expires,
            inner.identity_key,
            inner.sender_uuid,
            inner.signer,
        ) else {
            return Err(CertificateError::Malformed);
        };
        let device = u8::try_from(device)
            .ok()
            .and_then(|d| DeviceId::new(d).ok())
            .ok_or(CertificateError::BadDevice)?;
        let aci = match uuid {
            SenderUuid::UuidString(s) => {
                s.parse::<Aci>().map_err(|_| CertificateError::Malformed)?
            }
            SenderUuid::UuidBytes(b) => {
                let raw: [u8; 16] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| CertificateError::Malformed)?;
                Aci(uuid::Uuid::from_bytes(raw))
            }
        };
        let signer = match signer {
            Signer::Certificate(b) => ServerCertificate::deserialize(&b)?,
            Signer::Id(id) => return Err(CertificateError::SignerReference(id)),
        };
        if key.len() != PUBLIC_KEY_LEN {
            return Err(CertificateError::BadKey);
        }
        let identity_key = PublicKey::from_bytes(&key).map_err(|_| CertificateError::BadKey)?;
        Ok(SenderCertificate {
            sender: SenderIdentity {
                aci,
                device,
                identity_key,
            },
            sender_e164: inner.sender_e164,
            expires,
            signer,
            certificate,
            signature,
            serialized: bytes.to_vec(),
        })
    }

    /// libsignal's `validate_with_trust_roots`: the embedded server certificate verifies under one of
    /// `trust_roots` and is not revoked, this certificate verifies under the server key, and `at` is not after
    /// the expiry.
    pub fn validate(&self, trust_roots: &[PublicKey], at: Timestamp) -> bool {
        if !self.signer.validate(trust_roots) {
            return false;
        }
        if !self
            .signer
            .key()
            .verify_signature(&self.certificate, &self.signature)
        {
            return false;
        }
        u64::try_from(at.as_millis()).is_ok_and(|at| at <= self.expires)
    }

    /// Who the certificate vouches for.
    pub fn sender(&self) -> &SenderIdentity {
        &self.sender
    }

    /// The phone number, if the certificate carries one (Flatline's never do).
    pub fn sender_e164(&self) -> Option<&str> {
        self.sender_e164.as_deref()
    }

    /// Expiry in milliseconds since the epoch.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// The embedded server certificate.
    pub fn signer(&self) -> &ServerCertificate {
        &self.signer
    }

    /// The serialized inner `Certificate` (what the server key signed).
    pub fn certificate_data(&self) -> &[u8] {
        &self.certificate
    }

    /// The serialized `SenderCertificate` (what `GET /v1/certificate/delivery` returns, base64).
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}
