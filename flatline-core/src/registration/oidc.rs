//! OpenID Connect as the core needs it: provider settings, the I/O seams the server implements, and every
//! ID-token and logout-token claim check (pure functions, fuzzable).

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::Subject;
use crate::ids::{Principal, PrincipalError};
use crate::time::Timestamp;

/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// What to do when the IdP says a user logged out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogoutEffect {
    /// Lock every device credential (the next request gets 401; re-registration restores access).
    Lock,
    /// Validate and acknowledge, change nothing.
    Ignore,
}

/// A configured identity provider, as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Stable id (`[A-Za-z0-9_-]+`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Issuer; the ID token's `iss` must equal it.
    pub issuer: String,
    /// Our client id; must be an audience.
    pub client_id: String,
    /// Other audiences a token may carry.
    pub trusted_audiences: Vec<String>,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// Claim mapped to the principal; `None` = opaque principal.
    pub principal_claim: Option<String>,
    /// Redirect URIs apps may use.
    pub redirect_uris: Vec<String>,
    /// JWS algorithms accepted (never `none`).
    pub allowed_algs: Vec<String>,
    /// New subjects need an invite.
    pub invite_required: bool,
    /// Effect of a back-channel logout.
    pub logout_effect: LogoutEffect,
}

/// Endpoints of a provider, configured or discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoints {
    /// Where the app sends the user.
    pub authorization: String,
    /// Token endpoint.
    pub token: String,
    /// Pushed authorization request endpoint.
    pub par: String,
    /// RP-initiated logout, when offered.
    pub end_session: Option<String>,
}

/// The IdP failed or could not be reached (502 `idp_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity provider failed: {0}")]
pub struct IdpError(pub String);

/// A refused code exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// `invalid_grant`: wrong verifier, replayed or expired code (401 `code_invalid`).
    #[error("the identity provider refused the code")]
    InvalidGrant,
    /// Anything else (502 `idp_error`).
    #[error(transparent)]
    Idp(#[from] IdpError),
}

/// A pushed authorization request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParResponse {
    /// `request_uri`.
    pub request_uri: String,
    /// `expires_in`, seconds.
    pub expires_in: u64,
}

/// HTTP calls to identity providers (implemented by the server over reqwest; by tests over fakes).
#[async_trait]
pub trait OidcClient: Send + Sync {
    /// The provider's endpoints (from configuration or discovery, cached by the implementation).
    async fn endpoints(&self, provider: &Provider) -> Result<ProviderEndpoints, IdpError>;
    /// Pushes an authorization request with client authentication.
    async fn push_authorization_request(
        &self,
        provider: &Provider,
        params: &[(&str, &str)],
    ) -> Result<ParResponse, IdpError>;
    /// Exchanges a code with client authentication; returns the raw ID token.
    async fn exchange_code(
        &self,
        provider: &Provider,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, ExchangeError>;
    /// Fetches the provider's JWKS (`https://` or `file://`), as JSON text.
    async fn fetch_jwks(&self, provider: &Provider) -> Result<String, IdpError>;
}

/// Why a JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, bad base64 or JSON.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` not allowed for this provider (including `none`).
    #[error("algorithm {0} not allowed")]
    Algorithm(String),
    /// No pinned key with this `kid` (an IdP key rotation the operator has not confirmed).
    #[error("unknown key id {0:?}")]
    UnknownKey(Option<String>),
    /// Signature invalid.
    #[error("bad signature")]
    Signature,
    /// A claim check failed.
    #[error("claim check failed: {0}")]
    Claim(&'static str),
}

/// A JWS whose signature was checked against a key set.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJws {
    /// The protected header's `typ`, if any.
    pub typ: Option<String>,
    /// The claims.
    pub claims: Value,
}

/// Checks a compact JWS against a JWKS (implemented by the server with a JOSE library).
pub trait JwsVerifier: Send + Sync {
    /// Verifies `token` with the key of its `kid` from `jwks` (JSON), accepting only `allowed_algs`.
    fn verify(
        &self,
        token: &str,
        jwks: &str,
        allowed_algs: &[String],
    ) -> Result<VerifiedJws, TokenError>;
}

/// What an ID token must match.
#[derive(Debug, Clone)]
pub struct IdTokenExpectations<'a> {
    /// The provider.
    pub provider: &'a Provider,
    /// The nonce we sent.
    pub nonce: &'a str,
    /// Now.
    pub now: Timestamp,
}

/// The parts of an ID token registration uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenFacts {
    /// `sub`.
    pub sub: String,
    /// `sid`, if present.
    pub sid: Option<String>,
}

fn audiences(claims: &Value) -> Result<Vec<&str>, TokenError> {
    match claims.get("aud") {
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().ok_or(TokenError::Claim("aud")))
            .collect(),
        _ => Err(TokenError::Claim("aud")),
    }
}

fn seconds(claims: &Value, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(TokenError::Claim(name)),
    }
}

/// `iss`, `aud` (our client id plus only trusted others), `azp`, `exp`/`iat`/`nbf` with leeway.
fn check_common(
    claims: &Value,
    provider: &Provider,
    now: Timestamp,
    require_exp: bool,
) -> Result<(), TokenError> {
    if claims.get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
        return Err(TokenError::Claim("iss"));
    }
    let aud = audiences(claims)?;
    if !aud.contains(&provider.client_id.as_str()) {
        return Err(TokenError::Claim("aud"));
    }
    if aud
        .iter()
        .any(|a| *a != provider.client_id && !provider.trusted_audiences.iter().any(|t| t == a))
    {
        return Err(TokenError::Claim("aud"));
    }
    match claims.get("azp") {
        Some(Value::String(azp)) if *azp == provider.client_id => {}
        Some(_) => return Err(TokenError::Claim("azp")),
        None if aud.len() > 1 => return Err(TokenError::Claim("azp")),
        None => {}
    }
    let leeway = LEEWAY.as_secs() as i64;
    let now_s = now.as_secs();
    match seconds(claims, "exp")? {
        Some(exp) if exp.saturating_add(leeway) <= now_s => return Err(TokenError::Claim("exp")),
        None if require_exp => return Err(TokenError::Claim("exp")),
        _ => {}
    }
    match seconds(claims, "iat")? {
        Some(iat) if iat.saturating_sub(leeway) > now_s => return Err(TokenError::Claim("iat")),
        None => return Err(TokenError::Claim("iat")),
        _ => {}
    }
    if let Some(nbf) = seconds(claims, "nbf")?
        && nbf.saturating_sub(leeway) > now_s
    {
        return Err(TokenError::Claim("nbf"));
    }
    Ok(())
}

/// Every claim check of an ID token (the signature was checked before).
pub fn check_id_token(
    claims: &Value,
    expect: &IdTokenExpectations<'_>,
) -> Result<IdTokenFacts, TokenError> {
    check_common(claims, expect.provider, expect.now, true)?;
    let nonce = claims
        .get("nonce")
        .and_then(Value::as_str)
        .ok_or(TokenError::Claim("nonce"))?;
    if !(nonce.len() == expect.nonce.len()
        && bool::from(nonce.as_bytes().ct_eq(expect.nonce.as_bytes())))
    {
        return Err(TokenError::Claim("nonce"));
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::Claim("sub"))?;
    if sub.len() > 255 {
        return Err(TokenError::Claim("sub"));
    }
    let sid = claims
        .get("sid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .map(str::to_owned);
    Ok(IdTokenFacts {
        sub: sub.to_owned(),
        sid,
    })
}

/// The back-channel logout event member of `events`.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A validated logout token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutFacts {
    /// `sub`, if present.
    pub sub: Option<String>,
    /// `sid`, if present.
    pub sid: Option<String>,
    /// `jti` (replay-protected by the caller).
    pub jti: String,
    /// Until when the `jti` must be remembered.
    pub remember_until: Timestamp,
}

/// Every claim check of a logout token per OpenID Back-Channel Logout 1.0 §2.6 (signature and `typ` checked before).
pub fn check_logout_token(
    claims: &Value,
    provider: &Provider,
    now: Timestamp,
) -> Result<LogoutFacts, TokenError> {
    check_common(claims, provider, now, true)?;
    if claims.get("nonce").is_some() {
        return Err(TokenError::Claim("nonce"));
    }
    let event_ok = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !event_ok {
        return Err(TokenError::Claim("events"));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 255)
        .ok_or(TokenError::Claim("jti"))?;
    let text = |name| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (sub, sid) = (text("sub"), text("sid"));
    if sub.is_none() && sid.is_none() {
        return Err(TokenError::Claim("sub"));
    }
    // Remember the jti at least until the token could no longer be accepted.
    let exp = seconds(claims, "exp")?.unwrap_or(now.as_secs());
    let remember_until = Timestamp::from_secs(exp.max(now.as_secs())).plus(LEEWAY);
    Ok(LogoutFacts {
        sub,
        sid,
        jti: jti.to_owned(),
        remember_until,
    })
}

/// Why no principal could be derived (401 `principal_invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalDerivationError {
    /// The configured claim is missing or not a string.
    #[error("the principal claim is missing")]
    Missing,
    /// `email` claim without `email_verified: true`.
    #[error("email is not verified")]
    EmailUnverified,
    /// The claim fails principal validation.
    #[error(transparent)]
    Invalid(#[from] PrincipalError),
}

/// Derives the principal: the configured claim (validated), or the opaque keyed hash of (provider, sub).
pub fn derive_principal(
    provider: &Provider,
    subject: &Subject,
    claims: &Value,
    principal_secret: &[u8],
) -> Result<(Principal, bool), PrincipalDerivationError> {
    match &provider.principal_claim {
        None => {
            let digest = keyed_subject_hash(principal_secret, subject);
            Ok((Principal::parse(&hex::encode(digest))?, true))
        }
        Some(claim) => {
            let value = claims
                .get(claim)
                .and_then(Value::as_str)
                .ok_or(PrincipalDerivationError::Missing)?;
            if claim == "email" && claims.get("email_verified") != Some(&Value::Bool(true)) {
                return Err(PrincipalDerivationError::EmailUnverified);
            }
            Ok((Principal::parse(value)?, false))
        }
    }
}

/// `HMAC-SHA256(secret, provider ‖ 0x00 ‖ sub)`: the opaque principal and the tombstone key.
pub fn keyed_subject_hash(secret: &[u8], subject: &Subject) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return [0; 32];
    };
    mac.update(subject.provider.as_bytes());
    mac.update(&[0]);
    mac.update(subject.sub.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests;
