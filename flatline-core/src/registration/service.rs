//! The registration service: sessions at the identity provider, verification, the registration commit, logout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::oidc::{
    ExchangeError, IdTokenExpectations, IdpError, JwsVerifier, OidcClient,
    PrincipalDerivationError, Provider, TokenError,
};
use super::*;
use crate::account::{Account, AttributesError, Device};
use crate::credentials::{CredentialError, MIN_NEW_PASSWORD_LEN, SaltedTokenHash, decode_basic};
use crate::ids::{Aci, DeviceId, Pni, Principal};
use crate::invites::{BadCode, InviteCode, InviteState};
use crate::keys::KeyError;
use crate::random::{SecureRandom, random_array};
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError};
use crate::time::Clock;

/// Why a registration step was refused. The server maps each variant to one status and `code`.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// 400 `unknown_provider`.
    #[error("unknown identity provider")]
    UnknownProvider,
    /// 422: a field broke a rule.
    #[error("{0}")]
    Invalid(String),
    /// 403 `invite_invalid`.
    #[error("the invite cannot be used")]
    InviteInvalid,
    /// 403 `invite_required`.
    #[error("an invite is required to register")]
    InviteRequired,
    /// 502 `idp_error`.
    #[error(transparent)]
    Idp(#[from] IdpError),
    /// 404.
    #[error("no such verification session")]
    SessionNotFound,
    /// 409.
    #[error("the session is already verified")]
    AlreadyVerified,
    /// 400 `state_mismatch`.
    #[error("state does not match")]
    StateMismatch,
    /// 400 `issuer_mismatch`.
    #[error("iss does not match the provider's issuer")]
    IssuerMismatch,
    /// 401 `code_invalid`.
    #[error("the identity provider refused the code")]
    CodeInvalid,
    /// 401 `id_token_invalid`.
    #[error("ID token rejected: {0}")]
    IdToken(TokenError),
    /// 401 `principal_invalid`.
    #[error("no valid principal: {0}")]
    PrincipalInvalid(PrincipalDerivationError),
    /// 403 `principal_conflict`.
    #[error("the principal belongs to another account")]
    PrincipalConflict,
    /// 400 `principal_mismatch`: the Basic username is not the session's principal.
    #[error("the principal does not match the session")]
    PrincipalMismatch,
    /// 401 `session_unverified`.
    #[error("the session is not verified")]
    SessionUnverified,
    /// 401: malformed Basic header at registration.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// 429.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for RegistrationError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => RegistrationError::RateLimited(r),
            LimitError::Store(s) => RegistrationError::Store(s),
        }
    }
}

impl From<AttributesError> for RegistrationError {
    fn from(e: AttributesError) -> Self {
        RegistrationError::Invalid(e.to_string())
    }
}

impl From<KeyError> for RegistrationError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(s) => RegistrationError::Store(s),
            other => RegistrationError::Invalid(other.to_string()),
        }
    }
}

/// Registration settings from the server configuration.
#[derive(Clone)]
pub struct RegistrationSettings {
    /// How long a session (and then a verified session) lives.
    pub session_lifetime: Duration,
    /// Invites required for new subjects on every provider.
    pub invite_required: bool,
    /// Key of the opaque principal and tombstone hashes. Losing it changes every opaque principal.
    pub principal_secret: Zeroizing<Vec<u8>>,
}

/// `POST /v1/verification/session`, decoded.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Provider id.
    pub provider_id: String,
    /// PKCE S256 challenge (43 URL-safe characters).
    pub code_challenge: String,
    /// The app's state.
    pub state: String,
    /// Where the IdP sends the user back (must be configured).
    pub redirect_uri: String,
    /// Optional login hint.
    pub login_hint: Option<String>,
    /// Optional invite code.
    pub invite_code: Option<String>,
}

/// A started session with what the app needs to open the browser.
#[derive(Debug, Clone)]
pub struct StartedSession {
    /// The stored session.
    pub session: VerificationSession,
    /// The provider's authorization endpoint.
    pub authorization_endpoint: String,
    /// Our client id at the provider.
    pub client_id: String,
}

/// `PATCH /v1/verification/session/{id}`, decoded.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// Authorization code.
    pub code: String,
    /// PKCE verifier.
    pub code_verifier: String,
    /// The state the app got back.
    pub state: String,
    /// The callback's `iss` (RFC 9207), when the app passes it.
    pub iss: Option<String>,
}

/// A registered account, with whether it existed before.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The account as stored now.
    pub account: Account,
    /// True when an existing account was re-registered.
    pub reregistration: bool,
}

/// Why a logout token was refused (always 400 `invalid_request` on the wire).
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    /// Unknown provider.
    #[error("unknown provider")]
    UnknownProvider,
    /// The token failed a check.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The `jti` was seen before.
    #[error("replayed logout token")]
    Replay,
    /// No JWKS could be loaded.
    #[error(transparent)]
    Idp(#[from] IdpError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The registration service.
#[derive(Clone)]
pub struct Registration {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    limiters: RateLimiters,
    providers: Arc<BTreeMap<String, Provider>>,
    client: Arc<dyn OidcClient>,
    verifier: Arc<dyn JwsVerifier>,
    settings: RegistrationSettings,
}

fn is_url_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

impl Registration {
    /// The service over its dependencies.
    #[expect(
        clippy::too_many_arguments,
        reason = "a composition root; each dependency is distinct"
    )]
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        limiters: RateLimiters,
        providers: Vec<Provider>,
        client: Arc<dyn OidcClient>,
        verifier: Arc<dyn JwsVerifier>,
        settings: RegistrationSettings,
    ) -> Self {
        let providers = Arc::new(providers.into_iter().map(|p| (p.id.clone(), p)).collect());
        Registration {
            store,
            clock,
            rng,
            limiters,
            providers,
            client,
            verifier,
            settings,
        }
    }

    /// Configured providers, in id order.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    /// A configured provider.
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.get(id)
    }

    /// The OIDC client (for listing endpoints).
    pub fn client(&self) -> &Arc<dyn OidcClient> {
        &self.client
    }

    /// Starts a verification session: validates, checks an offered invite, pushes the authorization request.
    pub async fn start(
        &self,
        client_ip: &str,
        req: StartRequest,
    ) -> Result<StartedSession, RegistrationError> {
        self.limiters
            .check(Limiter::VerificationAuthorization, client_ip)
            .await?;
        let provider = self
            .providers
            .get(&req.provider_id)
            .ok_or(RegistrationError::UnknownProvider)?;
        if req.code_challenge.len() != 43 || !is_url_safe(&req.code_challenge) {
            return Err(invalid(
                "codeChallenge must be 43 URL-safe base64 characters (S256)",
            ));
        }
        if !printable(&req.state, 512) {
            return Err(invalid("state must be 1..=512 printable ASCII characters"));
        }
        if !provider.redirect_uris.contains(&req.redirect_uri) {
            return Err(invalid(
                "redirectUri is not one of the provider's redirect URIs",
            ));
        }
        if req
            .login_hint
            .as_deref()
            .is_some_and(|h| !printable(h, 256))
        {
            return Err(invalid(
                "loginHint must be 1..=256 printable ASCII characters",
            ));
        }
        let now = self.clock.now();
        let invite_code = match req.invite_code.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => {
                self.limiters
                    .check(Limiter::InviteAttempt, client_ip)
                    .await?;
                let code =
                    InviteCode::parse(raw).map_err(|BadCode| RegistrationError::InviteInvalid)?;
                let hash = code.hash();
                let invite = self
                    .store
                    .invite_by_code(&hash, now)
                    .await?
                    .ok_or(RegistrationError::InviteInvalid)?;
                let suspended = match invite.owner {
                    crate::invites::InviteOwner::Account(aci) => {
                        self.store.is_suspended(aci).await?
                    }
                    crate::invites::InviteOwner::Operator => false,
                };
                if invite.state(now, suspended) != InviteState::Active {
                    return Err(RegistrationError::InviteInvalid);
                }
                Some(hash)
            }
        };
        let endpoints = self.client.endpoints(provider).await?;
        let nonce = base64_url(&random_array::<32>(self.rng.as_ref()));
        let scope = provider.scopes.join(" ");
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &provider.client_id),
            ("redirect_uri", &req.redirect_uri),
            ("scope", &scope),
            ("state", &req.state),
            ("nonce", &nonce),
            ("code_challenge", &req.code_challenge),
            ("code_challenge_method", "S256"),
        ];
        if let Some(hint) = &req.login_hint {
            params.push(("login_hint", hint));
        }
        self.limiters
            .check(Limiter::IdpRequests, &provider.id)
            .await?;
        let par = self
            .client
            .push_authorization_request(provider, &params)
            .await?;
        let session = VerificationSession {
            id: SessionId::generate(self.rng.as_ref()),
            provider_id: provider.id.clone(),
            state: req.state,
            nonce,
            redirect_uri: req.redirect_uri,
            request_uri: par.request_uri,
            request_uri_lifetime: par.expires_in,
            invite_code,
            created_at: now,
            expires_at: now.plus(self.settings.session_lifetime),
            verified: None,
            reserved_invite: None,
        };
        self.store.create_session(&session).await?;
        Ok(StartedSession {
            session,
            authorization_endpoint: endpoints.authorization,
            client_id: provider.client_id.clone(),
        })
    }

    /// A live session.
    pub async fn session(&self, id: &str) -> Result<VerificationSession, RegistrationError> {
        let id = SessionId::parse(id).ok_or(RegistrationError::SessionNotFound)?;
        self.store
            .session(&id, self.clock.now())
            .await?
            .ok_or(RegistrationError::SessionNotFound)
    }

    /// The pinned JWKS of `provider`, pinning it on first use.
    async fn jwks(&self, provider: &Provider) -> Result<String, RegistrationError> {
        if let Some(jwks) = self.store.pinned_jwks(&provider.id).await? {
            return Ok(jwks);
        }
        let fetched = self.client.fetch_jwks(provider).await?;
        Ok(self
            .store
            .pin_jwks(&provider.id, &fetched, self.clock.now())
            .await?)
    }

    /// Completes a session: code exchange, ID token checks, principal rules, invite reservation.
    pub async fn verify(
        &self,
        id: &str,
        req: VerifyRequest,
    ) -> Result<VerificationSession, RegistrationError> {
        let session = self.session(id).await?;
        if session.verified.is_some() {
            return Err(RegistrationError::AlreadyVerified);
        }
        self.limiters
            .check(Limiter::VerificationTokenExchange, session.id.as_str())
            .await?;
        let provider = self
            .providers
            .get(&session.provider_id)
            .ok_or(RegistrationError::UnknownProvider)?;
        if !(req.state.len() == session.state.len()
            && bool::from(req.state.as_bytes().ct_eq(session.state.as_bytes())))
        {
            return Err(RegistrationError::StateMismatch);
        }
        if req.iss.as_deref().is_some_and(|iss| iss != provider.issuer) {
            return Err(RegistrationError::IssuerMismatch);
        }
        if !printable(&req.code, 4096) {
            return Err(invalid("code must be 1..=4096 printable ASCII characters"));
        }
        if !(43..=128).contains(&req.code_verifier.len())
            || !req
                .code_verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err(invalid(
                "codeVerifier must be 43..=128 unreserved characters (RFC 7636)",
            ));
        }
        self.limiters
            .check(Limiter::IdpRequests, &provider.id)
            .await?;
        let token = match self
            .client
            .exchange_code(
                provider,
                &req.code,
                &req.code_verifier,
                &session.redirect_uri,
            )
            .await
        {
            Ok(t) => t,
            Err(ExchangeError::InvalidGrant) => return Err(RegistrationError::CodeInvalid),
            Err(ExchangeError::Idp(e)) => return Err(e.into()),
        };
        let jwks = self.jwks(provider).await?;
        let verified = self
            .verifier
            .verify(&token, &jwks, &provider.allowed_algs)
            .map_err(RegistrationError::IdToken)?;
        let now = self.clock.now();
        let facts = oidc::check_id_token(
            &verified.claims,
            &IdTokenExpectations {
                provider,
                nonce: &session.nonce,
                now,
            },
        )
        .map_err(RegistrationError::IdToken)?;
        let subject = Subject {
            provider: provider.id.clone(),
            sub: facts.sub,
        };
        let (principal, principal_opaque) = oidc::derive_principal(
            provider,
            &subject,
            &verified.claims,
            &self.settings.principal_secret,
        )
        .map_err(RegistrationError::PrincipalInvalid)?;
        let existing = self.store.account_of_subject(&subject).await?;
        if let Some(holder) = self.store.account_by_principal(&principal).await?
            && Some(holder.aci) != existing
        {
            return Err(RegistrationError::PrincipalConflict);
        }
        let needs_invite =
            existing.is_none() && (self.settings.invite_required || provider.invite_required);
        if needs_invite && session.invite_code.is_none() {
            return Err(RegistrationError::InviteRequired);
        }
        let identity = VerifiedIdentity {
            subject_hash: oidc::keyed_subject_hash(&self.settings.principal_secret, &subject),
            subject,
            principal,
            principal_opaque,
            sid: facts.sid,
        };
        let expires_at = now.plus(self.settings.session_lifetime);
        match self
            .store
            .verify_session(&session.id, &identity, needs_invite, expires_at, now)
            .await?
        {
            VerifyOutcome::Verified => {}
            VerifyOutcome::NotFound => return Err(RegistrationError::SessionNotFound),
            VerifyOutcome::AlreadyVerified => return Err(RegistrationError::AlreadyVerified),
            VerifyOutcome::InviteUnavailable => return Err(RegistrationError::InviteInvalid),
        }
        self.session(session.id.as_str()).await
    }

    /// Creates or re-registers the account of a verified session. `client_ip` is the limiter key of the caller's
    /// network.
    ///
    /// Order (F-03 of the security review): the Basic username must be a well-formed principal; the per-network
    /// limiter bounds the signature-checking work; field validation (422); then the session. Only a request whose
    /// session is verified for exactly that principal is charged to the principal's `registration` limiter, so a
    /// stranger naming someone else's principal can never keep them at 429.
    pub async fn register(
        &self,
        authorization: &str,
        client_ip: &str,
        raw: RawRegistration,
    ) -> Result<Registered, RegistrationError> {
        let (username, password) = decode_basic(authorization, true)?;
        if !Principal::parse(&username).is_ok_and(|p| p.as_str() == username) {
            return Err(CredentialError::BadUsername.into());
        }
        self.limiters
            .check(Limiter::RegistrationPerIp, client_ip)
            .await?;
        if password.len() < MIN_NEW_PASSWORD_LEN {
            return Err(invalid(format!(
                "the device password must be at least {MIN_NEW_PASSWORD_LEN} characters (clients generate random ones)"
            )));
        }
        // Field validation first (422), as Signal-Server does.
        let ValidRegistration {
            session_id,
            attributes,
            aci_identity_key,
            pni_identity_key,
            keys,
        } = validate_registration(&raw)?;

        let session_id = SessionId::parse(&session_id).ok_or(RegistrationError::SessionNotFound)?;
        let session = self
            .store
            .session(&session_id, self.clock.now())
            .await?
            .ok_or(RegistrationError::SessionNotFound)?;
        let verified = session
            .verified
            .as_ref()
            .ok_or(RegistrationError::SessionUnverified)?;
        if verified.principal.as_str() != username {
            return Err(RegistrationError::PrincipalMismatch);
        }
        self.limiters
            .check(Limiter::Registration, &username)
            .await?;
        // Read the time only now, just before the store transaction (F-09: a stale `now` must not decide).
        let now = self.clock.now();
        let commit = RegistrationCommit {
            session_id,
            candidate_aci: Aci::random(self.rng.as_ref()),
            candidate_pni: Pni::random(self.rng.as_ref()),
            aci_identity_key,
            pni_identity_key,
            device: Device {
                id: DeviceId::PRIMARY,
                credential: SaltedTokenHash::generate(&password, self.rng.as_ref()),
                settings: attributes.device,
                created_at: now,
                last_seen: now,
                capabilities: attributes.capabilities,
            },
            settings: attributes.account,
            keys,
            now,
        };
        let (aci, reregistration) = match self.store.register(commit).await? {
            RegistrationOutcome::Created { aci, .. } => (aci, false),
            RegistrationOutcome::Reregistered { aci, .. } => (aci, true),
            RegistrationOutcome::SessionInvalid => {
                return Err(RegistrationError::SessionUnverified);
            }
            RegistrationOutcome::PrincipalConflict => {
                return Err(RegistrationError::PrincipalConflict);
            }
            RegistrationOutcome::InviteInvalid => {
                return Err(RegistrationError::InviteInvalid);
            }
        };
        let account = self
            .store
            .account(aci)
            .await?
            .ok_or_else(|| StoreError::corrupt("registered account vanished"))?;
        Ok(Registered {
            account,
            reregistration,
        })
    }

    /// Validates a back-channel logout token and applies the provider's configured effect.
    /// Returns the accounts affected (empty for `ignore` or an unknown subject).
    pub async fn backchannel_logout(
        &self,
        provider_id: &str,
        token: &str,
    ) -> Result<Vec<Aci>, LogoutError> {
        let provider = self
            .providers
            .get(provider_id)
            .ok_or(LogoutError::UnknownProvider)?;
        // Never pin on an unauthenticated request (F-05): the first pin happens after a code exchange with the
        // provider (`verify`) or by the operator (`jwks refresh`). Until then no logout token can be checked, and
        // there is no account of this provider to sign out either.
        let jwks = self.store.pinned_jwks(&provider.id).await?.ok_or_else(|| {
            LogoutError::Idp(IdpError(
                "no JWKS pinned for the provider yet; nothing to sign out".into(),
            ))
        })?;
        let verified = self.verifier.verify(token, &jwks, &provider.allowed_algs)?;
        if let Some(typ) = &verified.typ {
            let typ = typ.to_ascii_lowercase();
            if typ != "logout+jwt" && typ != "application/logout+jwt" {
                return Err(TokenError::Claim("typ").into());
            }
        }
        let now = self.clock.now();
        let facts = oidc::check_logout_token(&verified.claims, provider, now)?;
        if !self
            .store
            .record_token_id(
                &format!("logout:{}", provider.id),
                &facts.jti,
                facts.remember_until,
                now,
            )
            .await?
        {
            return Err(LogoutError::Replay);
        }
        let mut targets = vec![];
        if let Some(sub) = &facts.sub {
            targets.extend(
                self.store
                    .account_of_subject(&Subject {
                        provider: provider.id.clone(),
                        sub: sub.clone(),
                    })
                    .await?,
            );
        } else if let Some(sid) = &facts.sid {
            targets.extend(self.store.accounts_with_sid(&provider.id, sid).await?);
        }
        if provider.logout_effect == oidc::LogoutEffect::Lock {
            for aci in &targets {
                self.store.lock_credentials(*aci).await?;
            }
        }
        Ok(targets)
    }

    /// The RP-initiated logout URL for the account's provider, if it offers one.
    pub async fn end_session_url(&self, aci: Aci) -> Result<Option<String>, RegistrationError> {
        let Some(subject) = self.store.subject_of(aci).await? else {
            return Ok(None);
        };
        let Some(provider) = self.providers.get(&subject.provider) else {
            return Ok(None);
        };
        let endpoints = match self.client.endpoints(provider).await {
            Ok(e) => e,
            // Deletion must not fail because the IdP is down; the app just gets no logout URL.
            Err(_) => return Ok(None),
        };
        Ok(endpoints.end_session.map(|url| {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{sep}client_id={}",
                percent_encode(&provider.client_id)
            )
        }))
    }

    /// Fetches the provider's JWKS and replaces the pinned set; on failure the old set stays.
    pub async fn refresh_jwks(&self, provider_id: &str) -> Result<usize, RegistrationError> {
        let provider = self
            .providers
            .get(provider_id)
            .ok_or(RegistrationError::UnknownProvider)?;
        let fetched = self.client.fetch_jwks(provider).await?;
        let keys = serde_json::from_str::<serde_json::Value>(&fetched)
            .ok()
            .and_then(|v| v.get("keys").and_then(|k| k.as_array()).map(Vec::len))
            .filter(|n| *n > 0)
            .ok_or_else(|| IdpError("the fetched JWKS has no keys".into()))?;
        self.store
            .replace_jwks(&provider.id, &fetched, self.clock.now())
            .await?;
        Ok(keys)
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
