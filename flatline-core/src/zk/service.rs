//! What the chat server does with the zk parameters: the group auth credential batch of
//! `GET /v1/certificate/auth/group` (API.md §14, M§3.6), with Signal-Server's range rules, and the
//! `Group-Send-Token` check of sends and unversioned profile fetches (M§2.1, §2.5).

use zeroize::Zeroizing;

use super::{GroupSendFullToken, SECONDS_PER_DAY, ServerSecretParams, ZkError, ZkParams};
use super::{issue_auth_credential_with_pni_zkc, issue_call_link_auth_credential};
use crate::ids::{Aci, Pni, ServiceId};
use crate::random::{SecureRandom, random_array};

/// The longest redemption range, in days past its start (the range is inclusive: at most 8 days).
pub const MAX_REDEMPTION_DAYS: u64 = 7;

/// Why a credential batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupCredentialError {
    /// The redemption range breaks Signal-Server's rules (start/end day-aligned, start ≤ end, start not
    /// before today, end at most 7 days after today).
    #[error("invalid redemption range: {0}")]
    InvalidRange(&'static str),
    /// Issuance failed (a bug; never input).
    #[error(transparent)]
    Zk(#[from] ZkError),
}

/// One credential for one redemption day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCredential {
    /// The day (epoch seconds, day-aligned).
    pub redemption_time: u64,
    /// The serialized response (AuthCredentialWithPniResponse or CallLinkAuthCredentialResponse).
    pub credential: Vec<u8>,
}

/// The credential batch for a redemption range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCredentials {
    /// One `AuthCredentialWithPniResponse` (zkc) per day.
    pub credentials: Vec<DayCredential>,
    /// One `CallLinkAuthCredentialResponse` per day.
    pub call_link_auth_credentials: Vec<DayCredential>,
}

/// Checks a redemption range at `now` (epoch seconds): the days it covers.
pub fn redemption_days(start: u64, end: u64, now: u64) -> Result<Vec<u64>, GroupCredentialError> {
    let today = now - now % SECONDS_PER_DAY;
    if !start.is_multiple_of(SECONDS_PER_DAY) || !end.is_multiple_of(SECONDS_PER_DAY) {
        return Err(GroupCredentialError::InvalidRange(
            "times must be day-aligned",
        ));
    }
    if start > end {
        return Err(GroupCredentialError::InvalidRange("start is after end"));
    }
    if start < today {
        return Err(GroupCredentialError::InvalidRange("start is before today"));
    }
    if end > today + MAX_REDEMPTION_DAYS * SECONDS_PER_DAY {
        return Err(GroupCredentialError::InvalidRange(
            "end is more than 7 days after today",
        ));
    }
    Ok((start..=end).step_by(SECONDS_PER_DAY as usize).collect())
}

/// Issues one group auth credential and one call-link auth credential per day of the range.
pub fn issue_group_credentials(
    params: &ZkParams,
    aci: Aci,
    pni: Pni,
    start: u64,
    end: u64,
    now: u64,
    rng: &dyn SecureRandom,
) -> Result<GroupCredentials, GroupCredentialError> {
    let days = redemption_days(start, end, now)?;
    let mut credentials = Vec::with_capacity(days.len());
    let mut call_link_auth_credentials = Vec::with_capacity(days.len());
    for day in days {
        let r: Zeroizing<[u8; 32]> = Zeroizing::new(random_array(rng));
        credentials.push(DayCredential {
            redemption_time: day,
            credential: issue_auth_credential_with_pni_zkc(&params.server, aci, pni, day, &r)?,
        });
        let r: Zeroizing<[u8; 32]> = Zeroizing::new(random_array(rng));
        call_link_auth_credentials.push(DayCredential {
            redemption_time: day,
            credential: issue_call_link_auth_credential(&params.generic, aci, day, &r)?,
        });
    }
    Ok(GroupCredentials {
        credentials,
        call_link_auth_credentials,
    })
}

/// Why a `Group-Send-Token` header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupSendTokenError {
    /// Not standard base64 of a serialized `GroupSendFullToken` (Signal-Server: `GroupSendTokenHeader.valueOf`
    /// throws a 401 before the endpoint runs).
    #[error("Group-Send-Token is not a serialized GroupSendFullToken")]
    Malformed,
    /// Expired, or not for exactly these recipients (Signal-Server: 401).
    #[error("Group-Send-Token does not verify")]
    Invalid,
}

/// Parses the `Group-Send-Token` header value (standard base64, padding required).
pub fn parse_group_send_token(header: &str) -> Result<GroupSendFullToken, GroupSendTokenError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .map_err(|_| GroupSendTokenError::Malformed)?;
    GroupSendFullToken::from_bytes(&bytes).map_err(|_| GroupSendTokenError::Malformed)
}

/// Verifies a token for a send to `recipients` at `now` (epoch seconds), with the day's key derived from `params`
/// (`GroupSendFullToken.verify(serviceIds, now, GroupSendDerivedKeyPair.forExpiration(exp, params))`).
pub fn verify_group_send_token(
    params: &ServerSecretParams,
    token: &GroupSendFullToken,
    recipients: &[ServiceId],
    now: u64,
) -> Result<(), GroupSendTokenError> {
    token
        .verify_with_params(recipients, now, params)
        .map_err(|_| GroupSendTokenError::Invalid)
}

/// Days an expiring profile key credential is valid for (Signal-Server: now + 7 days, truncated to the day).
pub const PROFILE_KEY_CREDENTIAL_DAYS: u64 = 7;

/// The expiration Signal-Server gives a profile key credential issued at `now` (epoch seconds).
pub fn profile_key_credential_expiration(now: u64) -> u64 {
    let e = now.saturating_add(PROFILE_KEY_CREDENTIAL_DAYS * SECONDS_PER_DAY);
    e - e % SECONDS_PER_DAY
}

/// Why no profile key credential was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProfileCredentialError {
    /// The request is not hex of a serialized `ProfileKeyCredentialRequest` (Signal-Server: 400).
    #[error("credential request is not a ProfileKeyCredentialRequest")]
    InvalidRequest,
    /// The request's proof does not match the profile's commitment (Signal-Server: 400).
    #[error("credential request does not match the profile key commitment")]
    Verification,
    /// The stored commitment does not parse (it was validated when the profile was written: a bug).
    #[error("stored profile key commitment is invalid")]
    InvalidCommitment,
}

/// `GET /v1/profile/{aci}/{version}/{credentialRequest}?credentialType=expiringProfileKey`: verifies the request
/// (lower- or upper-case hex) against the stored commitment of that profile version and issues an
/// `ExpiringProfileKeyCredentialResponse` expiring [`profile_key_credential_expiration`]`(now)`.
pub fn issue_profile_key_credential(
    params: &ServerSecretParams,
    aci: Aci,
    stored_commitment: &[u8],
    request_hex: &str,
    now: u64,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, ProfileCredentialError> {
    let request = hex::decode(request_hex)
        .ok()
        .and_then(|b| super::ProfileKeyCredentialRequest::from_bytes(&b).ok())
        .ok_or(ProfileCredentialError::InvalidRequest)?;
    let commitment = super::ProfileKeyCommitment::from_bytes(stored_commitment)
        .map_err(|_| ProfileCredentialError::InvalidCommitment)?;
    let r: Zeroizing<[u8; 32]> = Zeroizing::new(random_array(rng));
    super::issue_expiring_profile_key_credential(
        params,
        &r,
        &request,
        aci,
        &commitment,
        profile_key_credential_expiration(now),
    )
    .map_err(|e| match e {
        ZkError::Verification => ProfileCredentialError::Verification,
        _ => ProfileCredentialError::InvalidRequest,
    })
}
