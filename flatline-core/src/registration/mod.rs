//! Phone-less registration: verification sessions through an OpenID Connect provider, then account creation.
//!
//! The flow (API.md §3): `start` pushes an authorization request and stores a session; `verify` exchanges the
//! code, checks the ID token against the provider's pinned JWKS, derives the principal and — for a new subject
//! where invites are required — reserves an invite use; `register` consumes the verified session (and the
//! reserved use) in the same transaction that creates or re-registers the account.

pub mod oidc;
mod service;
mod store;

use std::fmt;
use std::time::Duration;

pub use service::*;
pub use store::*;

use crate::account::{Account, AccountAttributes, AccountSettings, Device, RawAccountAttributes};
use crate::crypto::PublicKey;
use crate::ids::{Aci, Pni, Principal};
use crate::invites::{CodeHash, InviteId};
use crate::keys::{RawKey, SignedPreKey, validate_signed_key, verify_signatures};
use crate::random::{SecureRandom, random_array};
use crate::store::InitialKeys;
use crate::time::Timestamp;

/// How long a deleted account's (provider, sub) keeps its ACI for re-registration.
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// A verification session id: 128 random bits, URL-safe base64 without padding (22 characters).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh id.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        use base64::Engine as _;
        SessionId(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_array::<16>(rng)))
    }
    /// Accepts only the shape we generate, so junk never reaches the store.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 22
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| SessionId(s.to_owned()))
    }
    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Session ids grant the right to register; keep them out of logs.
        write!(f, "SessionId({}…)", &self.0[..4.min(self.0.len())])
    }
}

/// The (provider, sub) pair an account is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// Provider id from the configuration.
    pub provider: String,
    /// The IdP's `sub`.
    pub sub: String,
}

/// What a successful code exchange proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// Provider and subject.
    pub subject: Subject,
    /// Keyed hash of the subject: the tombstone key after deletion.
    pub subject_hash: [u8; 32],
    /// The principal derived from the ID token.
    pub principal: Principal,
    /// Whether the principal is opaque.
    pub principal_opaque: bool,
    /// The ID token's `sid`, kept to match sid-only logout tokens.
    pub sid: Option<String>,
}

/// A verification session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationSession {
    /// Id.
    pub id: SessionId,
    /// Provider id.
    pub provider_id: String,
    /// The client's `state`, compared on PATCH.
    pub state: String,
    /// Our nonce, compared with the ID token's.
    pub nonce: String,
    /// The redirect URI used in the PAR (sent again in the token request).
    pub redirect_uri: String,
    /// The PAR `request_uri`.
    pub request_uri: String,
    /// The PAR `expires_in`, seconds.
    pub request_uri_lifetime: u64,
    /// Hash of the invite code given at creation, if any.
    pub invite_code: Option<CodeHash>,
    /// Creation time.
    pub created_at: Timestamp,
    /// After this the session is gone (and any reserved invite use is free again).
    pub expires_at: Timestamp,
    /// Set once the code exchange succeeded.
    pub verified: Option<VerifiedIdentity>,
    /// The invite use this session holds, if it reserved one.
    pub reserved_invite: Option<InviteId>,
}

/// Result of marking a session verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Verified (and the invite use reserved, when one was asked for).
    Verified,
    /// No live session with that id.
    NotFound,
    /// Verified before.
    AlreadyVerified,
    /// The invite could not be reserved (unknown, revoked, expired, exhausted, owner suspended).
    InviteUnavailable,
}

/// Everything registration writes, applied atomically by [`RegistrationStore::register`].
#[derive(Debug, Clone)]
pub struct RegistrationCommit {
    /// The verified session being consumed.
    pub session_id: SessionId,
    /// ACI for a brand-new subject without a tombstone.
    pub candidate_aci: Aci,
    /// PNI for a new account or a rotated principal.
    pub candidate_pni: Pni,
    /// ACI identity key (33 bytes).
    pub aci_identity_key: Vec<u8>,
    /// PNI identity key (33 bytes).
    pub pni_identity_key: Vec<u8>,
    /// The new primary device (replaces every device on re-registration).
    pub device: Device,
    /// Account-level settings.
    pub settings: AccountSettings,
    /// Signed keys of the new primary.
    pub keys: InitialKeys,
    /// Now.
    pub now: Timestamp,
}

/// Result of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// An account was created (possibly reusing a tombstoned ACI).
    Created {
        /// The ACI.
        aci: Aci,
        /// The PNI.
        pni: Pni,
    },
    /// The subject's existing account was re-registered.
    Reregistered {
        /// The ACI (kept).
        aci: Aci,
        /// The PNI (rotated when the principal changed).
        pni: Pni,
    },
    /// The session is gone, unverified or already used.
    SessionInvalid,
    /// The principal belongs to another subject's account.
    PrincipalConflict,
    /// The session's reserved invite was revoked, expired or its owner suspended since the reservation; nothing
    /// was written (the reservation is not consumed).
    InviteInvalid,
}

/// The subject's current account, as the registration transaction found it (locked on PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingAccount {
    /// Its ACI (kept by a re-registration).
    pub aci: Aci,
    /// Its PNI (rotated when the principal changed).
    pub pni: Pni,
    /// Its principal.
    pub principal: Principal,
}

/// What [`plan_registration`] decides over: the state a store loads inside the registration transaction.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationFacts<'a> {
    /// The live session named by the commit, if any.
    pub session: Option<&'a VerificationSession>,
    /// Whether the session's reserved invite (if it has one) is still usable: unrevoked, unexpired, its owner not
    /// suspended. Ignored when the session reserved none.
    pub invite_usable: bool,
    /// The account bound to the session's subject.
    pub existing: Option<&'a ExistingAccount>,
    /// The account holding the session's principal.
    pub principal_holder: Option<Aci>,
    /// The ACI kept by a live tombstone of the subject. Read only when there is no `existing` account, so a store
    /// need only load it then.
    pub tombstone: Option<Aci>,
}

/// What a registration writes, decided once for every backend by [`plan_registration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationPlan {
    /// Nothing is written; the registration answers this outcome.
    Refuse(RegistrationOutcome),
    /// The subject's account is re-registered: same ACI, devices replaced, the one-time keys of both identities
    /// wiped, the username held for reclaim.
    Reregister {
        /// The account's ACI.
        aci: Aci,
        /// Its PNI before; its keys are wiped.
        old_pni: Pni,
        /// Its PNI after: the commit's candidate when the principal changed, else `old_pni`.
        pni: Pni,
    },
    /// A new account is created and bound to the subject.
    Create {
        /// The tombstone's ACI when the subject had a live one (the tombstone is consumed), else the candidate.
        aci: Aci,
        /// The commit's candidate PNI.
        pni: Pni,
        /// Whether `aci` came from the subject's tombstone.
        from_tombstone: bool,
    },
}

impl RegistrationPlan {
    /// The outcome the registration answers once the plan is applied.
    pub fn outcome(&self) -> RegistrationOutcome {
        match *self {
            RegistrationPlan::Refuse(ref outcome) => outcome.clone(),
            RegistrationPlan::Reregister { aci, pni, .. } => {
                RegistrationOutcome::Reregistered { aci, pni }
            }
            RegistrationPlan::Create { aci, pni, .. } => RegistrationOutcome::Created { aci, pni },
        }
    }

    /// The principal changes hands (a re-registration whose PNI rotates).
    pub fn rotates_pni(&self) -> bool {
        matches!(self, RegistrationPlan::Reregister { old_pni, pni, .. } if old_pni != pni)
    }
}

/// The registration decision, in this order: the session must be live and verified; its reserved invite must
/// still be usable; the principal must not be held by another subject's account; then the subject's account is
/// re-registered (PNI rotated when the principal changed) or a new one is created (reusing a live tombstone's ACI).
/// `candidate_aci`/`candidate_pni` are the commit's fresh identifiers. Uniqueness of the candidates is left to the store's constraints ([`crate::store::Conflict`]).
pub fn plan_registration(
    facts: &RegistrationFacts<'_>,
    candidate_aci: Aci,
    candidate_pni: Pni,
) -> RegistrationPlan {
    let Some(session) = facts.session else {
        return RegistrationPlan::Refuse(RegistrationOutcome::SessionInvalid);
    };
    let Some(verified) = &session.verified else {
        return RegistrationPlan::Refuse(RegistrationOutcome::SessionInvalid);
    };
    if session.reserved_invite.is_some() && !facts.invite_usable {
        return RegistrationPlan::Refuse(RegistrationOutcome::InviteInvalid);
    }
    let existing_aci = facts.existing.map(|e| e.aci);
    if let Some(holder) = facts.principal_holder
        && Some(holder) != existing_aci
    {
        return RegistrationPlan::Refuse(RegistrationOutcome::PrincipalConflict);
    }
    match facts.existing {
        Some(existing) => RegistrationPlan::Reregister {
            aci: existing.aci,
            old_pni: existing.pni,
            pni: if existing.principal == verified.principal {
                existing.pni
            } else {
                candidate_pni
            },
        },
        None => RegistrationPlan::Create {
            aci: facts.tombstone.unwrap_or(candidate_aci),
            pni: candidate_pni,
            from_tombstone: facts.tombstone.is_some(),
        },
    }
}

impl RegistrationCommit {
    /// The account a [`RegistrationPlan::Create`] stores: `aci` and `pni` from the plan, the principal from the
    /// verified session, everything else from the commit.
    pub fn new_account(&self, aci: Aci, pni: Pni, verified: &VerifiedIdentity) -> Account {
        Account {
            aci,
            pni,
            principal: verified.principal.clone(),
            principal_opaque: verified.principal_opaque,
            aci_identity_key: self.aci_identity_key.clone(),
            pni_identity_key: self.pni_identity_key.clone(),
            settings: self.settings.clone(),
            username_hash: None,
            username_link_handle: None,
            created_at: self.now,
            devices: vec![self.device.clone()],
        }
    }

    /// `account` as a [`RegistrationPlan::Reregister`] leaves it: the new PNI, principal, identity keys and
    /// settings, and the commit's device as its only device; its ACI, username and creation time are kept.
    pub fn reregistered(&self, account: Account, pni: Pni, verified: &VerifiedIdentity) -> Account {
        Account {
            username_hash: account.username_hash,
            username_link_handle: account.username_link_handle,
            created_at: account.created_at,
            ..self.new_account(account.aci, pni, verified)
        }
    }
}

/// `POST /v1/registration`, decoded but not validated.
#[derive(Debug, Clone, Default)]
pub struct RawRegistration {
    /// `sessionId`.
    pub session_id: Option<String>,
    /// Whether `recoveryPassword` was sent (unsupported: Flatline has no SVR).
    pub recovery_password: bool,
    /// `accountAttributes`.
    pub attributes: Option<RawAccountAttributes>,
    /// `aciIdentityKey`.
    pub aci_identity_key: Option<Vec<u8>>,
    /// `pniIdentityKey`.
    pub pni_identity_key: Option<Vec<u8>>,
    /// `aciSignedPreKey`.
    pub aci_signed_pre_key: Option<RawKey>,
    /// `pniSignedPreKey`.
    pub pni_signed_pre_key: Option<RawKey>,
    /// `aciPqLastResortPreKey`.
    pub aci_pq_last_resort: Option<RawKey>,
    /// `pniPqLastResortPreKey`.
    pub pni_pq_last_resort: Option<RawKey>,
    /// How many push tokens (`apnToken`, `gcmToken`) were sent.
    pub push_tokens: usize,
}

/// The fields of a registration request after validation: what [`Registration::register`] commits.
#[derive(Debug, Clone)]
pub struct ValidRegistration {
    /// `sessionId` (its shape is checked later, with the session lookup).
    pub session_id: String,
    /// Validated account attributes.
    pub attributes: AccountAttributes,
    /// ACI identity key (33 bytes).
    pub aci_identity_key: Vec<u8>,
    /// PNI identity key (33 bytes).
    pub pni_identity_key: Vec<u8>,
    /// Signed keys, every signature verified.
    pub keys: InitialKeys,
}

/// Every field rule of `POST /v1/registration` (422 on failure), in Signal-Server's order: session id xor
/// recovery password, attributes, delivery channel, identity keys, signed keys and their signatures. Pure, so the
/// request body can be fuzzed without a store.
pub fn validate_registration(
    raw: &RawRegistration,
) -> Result<ValidRegistration, RegistrationError> {
    let session_id = match (&raw.session_id, raw.recovery_password) {
        (Some(id), false) => id.clone(),
        (None, true) => {
            return Err(invalid(
                "recovery passwords are not supported; register with a sessionId",
            ));
        }
        _ => {
            return Err(invalid(
                "exactly one of sessionId and recoveryPassword is required",
            ));
        }
    };
    let raw_attributes = raw
        .attributes
        .clone()
        .ok_or_else(|| invalid("accountAttributes is required"))?;
    match (raw_attributes.fetches_messages, raw.push_tokens) {
        (true, 0) | (false, 1) => {}
        _ => {
            return Err(invalid(
                "exactly one of fetchesMessages, apnToken and gcmToken is required",
            ));
        }
    }
    let attributes = AccountAttributes::validate(raw_attributes)?;
    let identity = |k: &Option<Vec<u8>>, field: &str| -> Result<Vec<u8>, RegistrationError> {
        let bytes = k
            .clone()
            .ok_or_else(|| invalid(format!("{field} is required")))?;
        PublicKey::from_bytes(&bytes).map_err(|e| invalid(format!("{field}: {e}")))?;
        Ok(bytes)
    };
    let aci_identity_key = identity(&raw.aci_identity_key, "aciIdentityKey")?;
    let pni_identity_key = identity(&raw.pni_identity_key, "pniIdentityKey")?;
    let key =
        |k: &Option<RawKey>, field: &str, kem: bool| -> Result<SignedPreKey, RegistrationError> {
            let raw = k
                .as_ref()
                .ok_or_else(|| invalid(format!("{field} is required")))?;
            Ok(validate_signed_key(field, raw, kem)?)
        };
    let keys = InitialKeys {
        aci_signed: key(&raw.aci_signed_pre_key, "aciSignedPreKey", false)?,
        pni_signed: key(&raw.pni_signed_pre_key, "pniSignedPreKey", false)?,
        aci_last_resort: key(&raw.aci_pq_last_resort, "aciPqLastResortPreKey", true)?,
        pni_last_resort: key(&raw.pni_pq_last_resort, "pniPqLastResortPreKey", true)?,
    };
    verify_signatures(
        &aci_identity_key,
        &[&keys.aci_signed, &keys.aci_last_resort],
    )?;
    verify_signatures(
        &pni_identity_key,
        &[&keys.pni_signed, &keys.pni_last_resort],
    )?;
    Ok(ValidRegistration {
        session_id,
        attributes,
        aci_identity_key,
        pni_identity_key,
        keys,
    })
}

fn invalid(msg: impl Into<String>) -> RegistrationError {
    RegistrationError::Invalid(msg.into())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
