//! In-memory verification sessions, subject bindings, tombstones, pinned JWKS and the token-id replay cache.

use std::collections::HashMap;

use async_trait::async_trait;
use flatline_core::ids::{Aci, DeviceId, ServiceId};
use flatline_core::registration::{
    ExistingAccount, OidcStateStore, RegistrationCommit, RegistrationFacts, RegistrationOutcome,
    RegistrationPlan, RegistrationStore, SessionId, Subject, TOMBSTONE_RETENTION,
    VerificationSession, VerifiedIdentity, VerifyOutcome, plan_registration,
};
use flatline_core::store::{Conflict, StoreError, StoreResult};
use flatline_core::time::Timestamp;

use super::{MemoryStore, State};

#[derive(Debug, Clone)]
struct Binding {
    aci: Aci,
    subject_hash: [u8; 32],
    sid: Option<String>,
}

#[derive(Default)]
pub(super) struct RegistrationState {
    sessions: HashMap<String, VerificationSession>,
    subjects: HashMap<Subject, Binding>,
    tombstones: HashMap<[u8; 32], (Aci, Timestamp)>,
    jwks: HashMap<String, String>,
    token_ids: HashMap<(String, String), Timestamp>,
}

impl RegistrationState {
    /// Turns the account's subject binding into a tombstone (account deletion).
    pub(super) fn tombstone(&mut self, aci: Aci, now: Timestamp) {
        let Some(subject) = self
            .subjects
            .iter()
            .find(|(_, b)| b.aci == aci)
            .map(|(s, _)| s.clone())
        else {
            return;
        };
        if let Some(binding) = self.subjects.remove(&subject) {
            self.tombstones
                .insert(binding.subject_hash, (aci, now.plus(TOMBSTONE_RETENTION)));
        }
    }

    /// Live sessions holding a reservation of `invite`.
    pub(super) fn reservations_of(
        &self,
        invite: flatline_core::invites::InviteId,
        now: Timestamp,
    ) -> u32 {
        let n = self
            .sessions
            .values()
            .filter(|s| s.reserved_invite == Some(invite) && s.expires_at > now)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

fn live(session: &VerificationSession, now: Timestamp) -> bool {
    session.expires_at > now
}

#[async_trait]
impl RegistrationStore for MemoryStore {
    async fn create_session(&self, session: &VerificationSession) -> StoreResult<()> {
        self.state()
            .registration
            .sessions
            .insert(session.id.as_str().to_owned(), session.clone());
        Ok(())
    }

    async fn session(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<Option<VerificationSession>> {
        Ok(self
            .state()
            .registration
            .sessions
            .get(id.as_str())
            .filter(|s| live(s, now))
            .cloned())
    }

    async fn verify_session(
        &self,
        id: &SessionId,
        identity: &VerifiedIdentity,
        reserve_invite: bool,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<VerifyOutcome> {
        let mut guard = self.state();
        let s: &mut State = &mut guard;
        let Some(session) = s
            .registration
            .sessions
            .get(id.as_str())
            .filter(|x| live(x, now))
            .cloned()
        else {
            return Ok(VerifyOutcome::NotFound);
        };
        if session.verified.is_some() {
            return Ok(VerifyOutcome::AlreadyVerified);
        }
        let mut reserved = None;
        if reserve_invite {
            let Some(code) = session.invite_code else {
                return Ok(VerifyOutcome::InviteUnavailable);
            };
            match s.invites.reservable(&code, now, &s.registration) {
                Some(invite) => reserved = Some(invite),
                None => return Ok(VerifyOutcome::InviteUnavailable),
            }
        }
        if let Some(stored) = s.registration.sessions.get_mut(id.as_str()) {
            stored.verified = Some(identity.clone());
            stored.reserved_invite = reserved;
            stored.expires_at = expires_at;
        }
        Ok(VerifyOutcome::Verified)
    }

    async fn register(&self, c: RegistrationCommit) -> StoreResult<RegistrationOutcome> {
        let mut guard = self.state();
        let s: &mut State = &mut guard;
        let now = c.now;
        let session = s
            .registration
            .sessions
            .get(c.session_id.as_str())
            .filter(|x| live(x, now))
            .cloned();
        let verified = session.as_ref().and_then(|x| x.verified.clone());
        let existing = verified.as_ref().and_then(|v| {
            let aci = s.registration.subjects.get(&v.subject)?.aci;
            let account = s.accounts.get(&aci)?;
            Some(ExistingAccount {
                aci,
                pni: account.pni,
                principal: account.principal.clone(),
            })
        });
        let tombstone = verified.as_ref().and_then(|v| {
            s.registration
                .tombstones
                .get(&v.subject_hash)
                .filter(|(_, until)| *until > now)
                .map(|(aci, _)| *aci)
        });
        let facts = RegistrationFacts {
            session: session.as_ref(),
            invite_usable: session
                .as_ref()
                .and_then(|x| x.reserved_invite)
                .is_some_and(|invite| s.invites.still_usable(invite, now)),
            existing: existing.as_ref(),
            principal_holder: verified
                .as_ref()
                .and_then(|v| s.by_principal.get(&v.principal).copied()),
            tombstone,
        };
        let plan = plan_registration(&facts, c.candidate_aci, c.candidate_pni);
        let outcome = plan.outcome();
        let (Some(session), Some(v)) = (session, verified) else {
            return Ok(plan.outcome());
        };
        let (aci, pni) = match plan {
            RegistrationPlan::Refuse(outcome) => return Ok(outcome),
            RegistrationPlan::Reregister { aci, old_pni, pni } => {
                if pni != old_pni && s.by_pni.contains_key(&pni) {
                    return Err(StoreError::Conflict(Conflict::Pni));
                }
                let Some(account) = s.accounts.remove(&aci) else {
                    return Err(StoreError::corrupt("subject without account"));
                };
                s.by_principal.remove(&account.principal);
                s.by_principal.insert(v.principal.clone(), aci);
                s.by_pni.remove(&old_pni);
                s.by_pni.insert(pni, aci);
                s.remove_keys_of(ServiceId::Aci(aci));
                s.remove_keys_of(ServiceId::Pni(old_pni));
                s.accounts.insert(aci, c.reregistered(account, pni, &v));
                // The old username waits 3 days for the re-registered account to confirm it again.
                s.with_view(aci, &[], |view| view.hold_for_reclaim(now));
                if let Some(b) = s.registration.subjects.get_mut(&v.subject) {
                    b.sid = v.sid.clone();
                }
                (aci, pni)
            }
            RegistrationPlan::Create { aci, pni, .. } => {
                s.registration.tombstones.remove(&v.subject_hash);
                if s.accounts.contains_key(&aci) {
                    return Err(StoreError::Conflict(Conflict::Aci));
                }
                if s.by_pni.contains_key(&pni) {
                    return Err(StoreError::Conflict(Conflict::Pni));
                }
                let account = c.new_account(aci, pni, &v);
                s.by_pni.insert(pni, aci);
                s.by_principal.insert(account.principal.clone(), aci);
                s.accounts.insert(aci, account);
                s.registration.subjects.insert(
                    v.subject.clone(),
                    Binding {
                        aci,
                        subject_hash: v.subject_hash,
                        sid: v.sid.clone(),
                    },
                );
                (aci, pni)
            }
        };
        for (owner, signed, last_resort) in [
            (
                ServiceId::Aci(aci),
                &c.keys.aci_signed,
                &c.keys.aci_last_resort,
            ),
            (
                ServiceId::Pni(pni),
                &c.keys.pni_signed,
                &c.keys.pni_last_resort,
            ),
        ] {
            let entry = s.keys.entry((owner, DeviceId::PRIMARY)).or_default();
            entry.signed = Some(signed.clone());
            entry.last_resort = Some(last_resort.clone());
        }
        s.registration.sessions.remove(c.session_id.as_str());
        if let Some(invite) = session.reserved_invite {
            s.invites.consume(invite, aci, now);
        }
        Ok(outcome)
    }

    async fn account_of_subject(&self, subject: &Subject) -> StoreResult<Option<Aci>> {
        Ok(self
            .state()
            .registration
            .subjects
            .get(subject)
            .map(|b| b.aci))
    }

    async fn subject_of(&self, aci: Aci) -> StoreResult<Option<Subject>> {
        Ok(self
            .state()
            .registration
            .subjects
            .iter()
            .find(|(_, b)| b.aci == aci)
            .map(|(s, _)| s.clone()))
    }

    async fn accounts_with_sid(&self, provider: &str, sid: &str) -> StoreResult<Vec<Aci>> {
        let s = self.state();
        let mut found: Vec<Aci> = s
            .registration
            .subjects
            .iter()
            .filter(|(subject, b)| subject.provider == provider && b.sid.as_deref() == Some(sid))
            .map(|(_, b)| b.aci)
            .collect();
        found.sort();
        Ok(found)
    }

    async fn purge_expired_registrations(&self, now: Timestamp) -> StoreResult<u64> {
        let mut s = self.state();
        let r = &mut s.registration;
        let before = r.sessions.len() + r.tombstones.len() + r.token_ids.len();
        r.sessions.retain(|_, x| x.expires_at > now);
        r.tombstones.retain(|_, (_, until)| *until > now);
        r.token_ids.retain(|_, until| *until > now);
        Ok((before - (r.sessions.len() + r.tombstones.len() + r.token_ids.len())) as u64)
    }
}

#[async_trait]
impl OidcStateStore for MemoryStore {
    async fn pinned_jwks(&self, provider: &str) -> StoreResult<Option<String>> {
        Ok(self.state().registration.jwks.get(provider).cloned())
    }

    async fn pin_jwks(&self, provider: &str, jwks: &str, _now: Timestamp) -> StoreResult<String> {
        Ok(self
            .state()
            .registration
            .jwks
            .entry(provider.to_owned())
            .or_insert_with(|| jwks.to_owned())
            .clone())
    }

    async fn replace_jwks(&self, provider: &str, jwks: &str, _now: Timestamp) -> StoreResult<()> {
        self.state()
            .registration
            .jwks
            .insert(provider.to_owned(), jwks.to_owned());
        Ok(())
    }

    async fn record_token_id(
        &self,
        scope: &str,
        token_id: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut s = self.state();
        let key = (scope.to_owned(), token_id.to_owned());
        match s.registration.token_ids.get(&key) {
            Some(until) if *until > now => Ok(false),
            _ => {
                s.registration.token_ids.insert(key, expires_at);
                Ok(true)
            }
        }
    }
}
