//! Group auth credentials (`AuthCredentialWithPniZkc`, version 3) and call-link auth credentials,
//! both zkcredential issuance proofs.
//!
//! * AuthCredentialWithPniZkcResponse: `0x03 ‖ issuance proof` (425 bytes), attributes ACI, PNI
//!   (hidden) and the redemption time (public), keyed by the generic key of `ServerSecretParams`.
//! * CallLinkAuthCredentialResponse: `0x00 ‖ issuance proof` (361 bytes), attributes ACI and the
//!   redemption time, keyed by `GenericServerSecretParams` (legacy).

use super::SECONDS_PER_DAY;
use super::ZkError;
use super::bytes::Reader;
use super::issuance::{IssuanceProof, IssuanceProofBuilder};
use super::params::{
    GenericServerPublicParams, GenericServerSecretParams, ServerPublicParams, ServerSecretParams,
};
use super::uid::UidStruct;
use crate::ids::{Aci, Pni, ServiceId};

const AUTH_LABEL: &[u8] = b"20240222_Signal_AuthCredentialZkc";
const CALL_LINK_LABEL: &[u8] = b"20230421_Signal_CallLinkAuthCredential";
const AUTH_ZKC_VERSION: u8 = 3;
const CALL_LINK_LEGACY_VERSION: u8 = 0;

/// Length of an `AuthCredentialWithPniResponse` (zkc).
pub const AUTH_CREDENTIAL_WITH_PNI_RESPONSE_LEN: usize = 425;
/// Length of a `CallLinkAuthCredentialResponse`.
pub const CALL_LINK_AUTH_CREDENTIAL_RESPONSE_LEN: usize = 361;

fn auth_builder(aci: Aci, pni: Pni, redemption_time: u64) -> IssuanceProofBuilder {
    IssuanceProofBuilder::new(AUTH_LABEL)
        .add_attribute(UidStruct::new(ServiceId::Aci(aci)).points())
        .add_attribute(UidStruct::new(ServiceId::Pni(pni)).points())
        .add_public_attribute(&redemption_time.to_be_bytes())
}

fn call_link_builder(aci: Aci, redemption_time: u64) -> IssuanceProofBuilder {
    IssuanceProofBuilder::new(CALL_LINK_LABEL)
        .add_attribute(UidStruct::new(ServiceId::Aci(aci)).points())
        .add_public_attribute(&redemption_time.to_be_bytes())
}

fn day_aligned(t: u64) -> Result<(), ZkError> {
    if t.is_multiple_of(SECONDS_PER_DAY) {
        Ok(())
    } else {
        Err(ZkError::Verification)
    }
}

/// `ServerZkAuthOperations.issueAuthCredentialWithPniZkc`: the serialized response.
/// `redemption_time` (epoch seconds) must be day-aligned, as clients reject anything else.
pub fn issue_auth_credential_with_pni_zkc(
    params: &ServerSecretParams,
    aci: Aci,
    pni: Pni,
    redemption_time: u64,
    randomness: &[u8; 32],
) -> Result<Vec<u8>, ZkError> {
    day_aligned(redemption_time)?;
    let proof = auth_builder(aci, pni, redemption_time).issue(&params.generic, randomness)?;
    let mut out = Vec::with_capacity(AUTH_CREDENTIAL_WITH_PNI_RESPONSE_LEN);
    out.push(AUTH_ZKC_VERSION);
    proof.write(&mut out);
    Ok(out)
}

/// The client's `receive` of an auth credential response: verifies the issuance proof. Used by
/// tests and the test kit; returns the credential's `(t, U, V)` bytes.
pub fn receive_auth_credential_with_pni_zkc(
    public: &ServerPublicParams,
    aci: Aci,
    pni: Pni,
    redemption_time: u64,
    response: &[u8],
) -> Result<[u8; 96], ZkError> {
    day_aligned(redemption_time)?;
    let mut r = Reader::new(response);
    r.version(AUTH_ZKC_VERSION)?;
    let proof = IssuanceProof::read(&mut r)?;
    r.finish()?;
    let credential = auth_builder(aci, pni, redemption_time).verify(&public.generic, &proof)?;
    let mut out = Vec::with_capacity(96);
    credential.write(&mut out);
    out.try_into().map_err(|_| ZkError::BadArguments)
}

/// `CallLinkAuthCredentialResponse.issueCredential`: the serialized response.
pub fn issue_call_link_auth_credential(
    params: &GenericServerSecretParams,
    aci: Aci,
    redemption_time: u64,
    randomness: &[u8; 32],
) -> Result<Vec<u8>, ZkError> {
    day_aligned(redemption_time)?;
    let proof = call_link_builder(aci, redemption_time).issue(&params.key, randomness)?;
    let mut out = Vec::with_capacity(CALL_LINK_AUTH_CREDENTIAL_RESPONSE_LEN);
    out.push(CALL_LINK_LEGACY_VERSION);
    proof.write(&mut out);
    Ok(out)
}

/// The client's `receive` of a call-link auth credential response.
pub fn receive_call_link_auth_credential(
    public: &GenericServerPublicParams,
    aci: Aci,
    redemption_time: u64,
    response: &[u8],
) -> Result<(), ZkError> {
    day_aligned(redemption_time)?;
    let mut r = Reader::new(response);
    r.version(CALL_LINK_LEGACY_VERSION)?;
    let proof = IssuanceProof::read(&mut r)?;
    r.finish()?;
    call_link_builder(aci, redemption_time).verify(&public.key, &proof)?;
    Ok(())
}
