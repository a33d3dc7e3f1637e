//! zkgroup, the server half, byte-compatible with libsignal 0.103.0's `zkgroup`/`zkcredential`/
//! `poksho` and written on crates.io `curve25519-dalek` (feature `lizard`), `sha2` and `hmac`.
//!
//! * [`sho`]: SHO-HMAC-SHA256 and SHO-SHA256, point/scalar squeezes.
//! * `poksho`: Fiat–Shamir Schnorr proofs over named statements (prover and verifier).
//! * [`ServerSecretParams`] / [`ServerPublicParams`] / [`GenericServerSecretParams`]: generation
//!   from a 32-byte seed, exact serialization, notary signatures.
//! * zkcredential issuance: [`issue_auth_credential_with_pni_zkc`] (group auth) and
//!   [`issue_call_link_auth_credential`].
//! * Profiles: [`ProfileKeyCommitment`], [`ProfileKeyCredentialRequest`] (proof verified),
//!   [`issue_expiring_profile_key_credential`].
//! * [`ZkParams`]: the instance key file holding both secret parameter sets.
//! * [`service`]: the credential batch of `GET /v1/certificate/auth/group`.
//! * Group send: [`GroupSendDerivedKeyPair`] per expiration day, [`GroupSendFullToken`] verification.
//!
//! Everything a client sends is parsed with the strict bincode rules of [`bytes`] (version byte,
//! canonical scalars, valid points, no trailing bytes); every failure is a typed [`ZkError`].
//! Nothing here panics on input.

mod auth;
mod bytes;
mod group_send;
mod issuance;
mod keyfile;
mod params;
mod poksho;
mod profile;
pub mod service;
pub mod sho;
mod uid;

pub use auth::{
    AUTH_CREDENTIAL_WITH_PNI_RESPONSE_LEN, CALL_LINK_AUTH_CREDENTIAL_RESPONSE_LEN,
    issue_auth_credential_with_pni_zkc, issue_call_link_auth_credential,
    receive_auth_credential_with_pni_zkc, receive_call_link_auth_credential,
};

pub use group_send::{
    GROUP_SEND_DERIVED_KEY_PAIR_LEN, GROUP_SEND_FULL_TOKEN_LEN, GroupSendDerivedKeyPair,
    GroupSendFullToken,
};
pub use keyfile::ZkParams;
pub use params::{
    GENERIC_SERVER_PUBLIC_PARAMS_LEN, GENERIC_SERVER_SECRET_PARAMS_LEN, GenericServerPublicParams,
    GenericServerSecretParams, NOTARY_SIGNATURE_LEN, SERVER_PUBLIC_PARAMS_LEN,
    SERVER_SECRET_PARAMS_LEN, ServerPublicParams, ServerSecretParams,
};
pub use profile::{
    EXPIRING_PROFILE_KEY_CREDENTIAL_RESPONSE_LEN, PROFILE_KEY_COMMITMENT_LEN,
    PROFILE_KEY_CREDENTIAL_REQUEST_LEN, ProfileKeyCommitment, ProfileKeyCredentialRequest,
    issue_expiring_profile_key_credential, verify_expiring_profile_key_credential_response,
};
pub use service::*;

/// Seconds in a day; credential times are day-aligned.
pub const SECONDS_PER_DAY: u64 = 86_400;

/// Why a zkgroup operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ZkError {
    /// The bytes are not a valid serialization of the expected object.
    #[error("zkgroup object could not be deserialized")]
    Deserialization,
    /// A proof, signature or token did not verify, or a time check failed.
    #[error("zkgroup verification failure")]
    Verification,
    /// Internal inconsistency between a statement and its arguments (a bug, never input).
    #[error("zkgroup proof arguments are inconsistent")]
    BadArguments,
}

#[cfg(test)]
mod tests;
