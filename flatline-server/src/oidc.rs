//! The identity-provider side of registration: HTTP calls (discovery, PAR, token exchange, JWKS) over reqwest,
//! and JWS verification over `jsonwebtoken`. The core decides what to do with the answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flatline_core::registration::oidc::{
    ExchangeError, IdpError, JwsVerifier, OidcClient, ParResponse, Provider, ProviderEndpoints,
    TokenError, VerifiedJws,
};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;
use zeroize::Zeroizing;

use crate::config::{ClientAuth, ProviderConfig};

/// What the client needs per provider beyond the core's view: endpoints, the secret, the auth method.
pub struct ProviderRuntime {
    /// The configuration.
    pub config: ProviderConfig,
    /// The client secret.
    pub secret: Zeroizing<String>,
}

#[derive(Clone)]
struct Resolved {
    endpoints: ProviderEndpoints,
    jwks_uri: String,
}

/// reqwest-based [`OidcClient`]. Discovery results are cached per process (they are not security state; the JWKS
/// is pinned in the store). A failed discovery is remembered for [`DISCOVERY_RETRY`], and concurrent misses wait
/// for one fetch, so unauthenticated requests cannot make the server hammer a broken IdP (F-06).
pub struct HttpOidcClient {
    http: reqwest::Client,
    providers: HashMap<String, ProviderRuntime>,
    resolved: RwLock<HashMap<String, Resolved>>,
    failed: RwLock<HashMap<String, (Instant, IdpError)>>,
    resolving: tokio::sync::Mutex<()>,
}

/// How long a failed discovery is answered from memory before it is tried again.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(10);

/// Largest discovery document or JWKS read from an IdP (F-13).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Largest PAR or token response read from an IdP.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Reads at most `max` bytes of `response` as text; a longer body is an error, not a longer wait.
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<String, IdpError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(IdpError(format!("response larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(idp)? {
        if body.len() + chunk.len() > max {
            return Err(IdpError(format!("response larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| IdpError("response is not UTF-8".into()))
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    pushed_authorization_request_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
    jwks_uri: Option<String>,
}

#[derive(Deserialize)]
struct ParBody {
    request_uri: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenBody {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
}

fn idp(e: impl std::fmt::Display) -> IdpError {
    IdpError(e.to_string())
}

impl HttpOidcClient {
    /// A client for `providers`, with `timeout` per request. Redirects are not followed (an IdP answering a
    /// back-channel request with a redirect is misconfigured).
    pub fn new(providers: Vec<ProviderRuntime>, timeout: Duration) -> Result<Self, IdpError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flatline-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(idp)?;
        Ok(HttpOidcClient {
            http,
            providers: providers
                .into_iter()
                .map(|p| (p.config.id.clone(), p))
                .collect(),
            resolved: RwLock::new(HashMap::new()),
            failed: RwLock::new(HashMap::new()),
            resolving: tokio::sync::Mutex::new(()),
        })
    }

    fn runtime(&self, provider: &Provider) -> Result<&ProviderRuntime, IdpError> {
        self.providers
            .get(&provider.id)
            .ok_or_else(|| IdpError(format!("provider {} has no runtime", provider.id)))
    }

    async fn cached(&self, provider: &Provider) -> Option<Result<Resolved, IdpError>> {
        if let Some(r) = self.resolved.read().await.get(&provider.id) {
            return Some(Ok(r.clone()));
        }
        match self.failed.read().await.get(&provider.id) {
            Some((at, e)) if at.elapsed() < DISCOVERY_RETRY => Some(Err(e.clone())),
            _ => None,
        }
    }

    async fn resolve(&self, provider: &Provider) -> Result<Resolved, IdpError> {
        if let Some(r) = self.cached(provider).await {
            return r;
        }
        let _single_flight = self.resolving.lock().await;
        if let Some(r) = self.cached(provider).await {
            return r;
        }
        match self.discover(provider).await {
            Ok(r) => {
                self.failed.write().await.remove(&provider.id);
                self.resolved
                    .write()
                    .await
                    .insert(provider.id.clone(), r.clone());
                Ok(r)
            }
            Err(e) => {
                self.failed
                    .write()
                    .await
                    .insert(provider.id.clone(), (Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn discover(&self, provider: &Provider) -> Result<Resolved, IdpError> {
        let c = &self.runtime(provider)?.config;
        let discovered = if c.discovery {
            let url = format!(
                "{}/.well-known/openid-configuration",
                c.issuer.trim_end_matches('/')
            );
            let response = self.http.get(&url).send().await.map_err(idp)?;
            if !response.status().is_success() {
                return Err(IdpError(format!(
                    "discovery answered {}",
                    response.status()
                )));
            }
            let d: Discovery =
                serde_json::from_str(&read_capped(response, MAX_DOCUMENT_BYTES).await?)
                    .map_err(idp)?;
            if d.issuer != c.issuer {
                return Err(IdpError(format!(
                    "discovery issuer {} differs from the configured issuer",
                    d.issuer
                )));
            }
            Some(d)
        } else {
            None
        };
        let pick = |configured: &Option<String>, found: Option<&Option<String>>, name: &str| {
            configured
                .clone()
                .or_else(|| found.and_then(Clone::clone))
                .ok_or_else(|| IdpError(format!("provider {} has no {name}", c.id)))
        };
        let d = discovered.as_ref();
        let resolved = Resolved {
            endpoints: ProviderEndpoints {
                authorization: pick(
                    &c.authorization_endpoint,
                    d.map(|d| &d.authorization_endpoint),
                    "authorization endpoint",
                )?,
                token: pick(
                    &c.token_endpoint,
                    d.map(|d| &d.token_endpoint),
                    "token endpoint",
                )?,
                par: pick(
                    &c.par_endpoint,
                    d.map(|d| &d.pushed_authorization_request_endpoint),
                    "PAR endpoint",
                )?,
                end_session: c
                    .end_session_endpoint
                    .clone()
                    .or_else(|| d.and_then(|d| d.end_session_endpoint.clone())),
            },
            jwks_uri: pick(&c.jwks_uri, d.map(|d| &d.jwks_uri), "jwks_uri")?,
        };
        let mut resolved = resolved;
        // Configured endpoints were validated with the configuration (where `file://` JWKS are allowed). What
        // discovery names must be https (or loopback http) and never a local file (F-05).
        let discovered_jwks = c.jwks_uri.is_none();
        for (url, from_discovery) in [
            (
                &resolved.endpoints.authorization,
                c.authorization_endpoint.is_none(),
            ),
            (&resolved.endpoints.token, c.token_endpoint.is_none()),
            (&resolved.endpoints.par, c.par_endpoint.is_none()),
            (&resolved.jwks_uri, discovered_jwks),
        ] {
            if from_discovery && !crate::config::secure_or_loopback(url) {
                return Err(IdpError(format!("discovered endpoint {url} is not https")));
            }
        }
        if c.end_session_endpoint.is_none()
            && let Some(url) = &resolved.endpoints.end_session
            && !crate::config::secure_or_loopback(url)
        {
            tracing::warn!(provider = %c.id, url = ?url, "discovered end_session_endpoint is not https; not offered to apps");
            resolved.endpoints.end_session = None;
        }
        Ok(resolved)
    }

    /// A form POST with client authentication.
    async fn post_form(
        &self,
        provider: &Provider,
        url: &str,
        params: &[(&str, &str)],
    ) -> Result<reqwest::Response, IdpError> {
        let runtime = self.runtime(provider)?;
        let mut form: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| *k != "client_id")
            .copied()
            .collect();
        let request = self.http.post(url);
        let request = match runtime.config.client_auth {
            ClientAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: form-urlencode id and secret before Basic encoding.
                let user = flatline_core::registration::percent_encode(&runtime.config.client_id);
                let pass = flatline_core::registration::percent_encode(&runtime.secret);
                request.basic_auth(user, Some(pass))
            }
            ClientAuth::ClientSecretPost => {
                form.push(("client_id", &runtime.config.client_id));
                form.push(("client_secret", &runtime.secret));
                request
            }
        };
        // client_id also travels in the form for PAR, as RFC 9126 requires of the authorization request.
        if params.iter().any(|(k, _)| *k == "client_id")
            && runtime.config.client_auth == ClientAuth::ClientSecretBasic
        {
            form.push(("client_id", &runtime.config.client_id));
        }
        request.form(&form).send().await.map_err(idp)
    }
}

#[async_trait]
impl OidcClient for HttpOidcClient {
    async fn endpoints(&self, provider: &Provider) -> Result<ProviderEndpoints, IdpError> {
        Ok(self.resolve(provider).await?.endpoints)
    }

    async fn push_authorization_request(
        &self,
        provider: &Provider,
        params: &[(&str, &str)],
    ) -> Result<ParResponse, IdpError> {
        let resolved = self.resolve(provider).await?;
        let response = self
            .post_form(provider, &resolved.endpoints.par, params)
            .await?;
        let status = response.status();
        let text = read_capped(response, MAX_RESPONSE_BYTES).await?;
        if !status.is_success() {
            return Err(IdpError(format!(
                "PAR answered {status}: {}",
                text.chars().take(200).collect::<String>()
            )));
        }
        let body: ParBody = serde_json::from_str(&text).map_err(idp)?;
        Ok(ParResponse {
            request_uri: body.request_uri,
            expires_in: body.expires_in,
        })
    }

    async fn exchange_code(
        &self,
        provider: &Provider,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, ExchangeError> {
        let resolved = self.resolve(provider).await?;
        let params = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let response = self
            .post_form(provider, &resolved.endpoints.token, &params)
            .await?;
        let status = response.status();
        let text = read_capped(response, MAX_RESPONSE_BYTES).await?;
        if !status.is_success() {
            if serde_json::from_str::<OAuthError>(&text).is_ok_and(|e| e.error == "invalid_grant") {
                return Err(ExchangeError::InvalidGrant);
            }
            return Err(IdpError(format!("token endpoint answered {status}")).into());
        }
        let body: TokenBody = serde_json::from_str(&text).map_err(idp)?;
        body.id_token
            .ok_or_else(|| IdpError("token response has no id_token".into()).into())
    }

    async fn fetch_jwks(&self, provider: &Provider) -> Result<String, IdpError> {
        let uri = self.resolve(provider).await?.jwks_uri;
        let text = if let Some(path) = uri.strip_prefix("file://") {
            // Only a configured jwks_uri can be a file (discovery is refused above).
            read_file_capped(path, MAX_DOCUMENT_BYTES)
                .await
                .map_err(|e| IdpError(format!("reading {uri}: {e}")))?
        } else {
            let response = self.http.get(&uri).send().await.map_err(idp)?;
            if !response.status().is_success() {
                return Err(IdpError(format!("jwks_uri answered {}", response.status())));
            }
            read_capped(response, MAX_DOCUMENT_BYTES).await?
        };
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| IdpError(format!("not a JWKS: {e}")))?;
        if set.keys.is_empty() {
            return Err(IdpError("the JWKS has no keys".into()));
        }
        Ok(text)
    }
}

/// Reads a local JWKS file of at most `max` bytes.
async fn read_file_capped(path: &str, max: usize) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path).await?;
    let mut text = String::new();
    file.take(max as u64 + 1).read_to_string(&mut text).await?;
    if text.len() > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(text)
}

/// [`JwsVerifier`] on `jsonwebtoken`: the key is chosen by `kid` from the pinned set; the algorithm must be allowed
/// and match the key; time and audience claims are left to the core (which uses the injected clock).
#[derive(Debug, Default, Clone, Copy)]
pub struct JoseVerifier;

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Reads the protected header without trusting it: `alg`, `kid`, `typ`.
fn raw_header(token: &str) -> Result<serde_json::Value, TokenError> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not a compact JWS".into()));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::Malformed("header is not base64url".into()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("header is not JSON".into()))?;
    if !value.is_object() {
        return Err(TokenError::Malformed("header is not an object".into()));
    }
    Ok(value)
}

impl JwsVerifier for JoseVerifier {
    fn verify(
        &self,
        token: &str,
        jwks: &str,
        allowed_algs: &[String],
    ) -> Result<VerifiedJws, TokenError> {
        if token.len() > 64 * 1024 {
            return Err(TokenError::Malformed("token too large".into()));
        }
        let header = raw_header(token)?;
        let alg_name = header.get("alg").and_then(|a| a.as_str()).unwrap_or("none");
        if !allowed_algs.iter().any(|a| a == alg_name) {
            return Err(TokenError::Algorithm(alg_name.to_owned()));
        }
        let alg = algorithm(alg_name).ok_or_else(|| TokenError::Algorithm(alg_name.to_owned()))?;
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .map(str::to_owned);
        let set: JwkSet = serde_json::from_str(jwks)
            .map_err(|_| TokenError::Malformed("pinned JWKS is not valid".into()))?;
        let jwk: &Jwk = kid
            .as_deref()
            .and_then(|k| set.find(k))
            .filter(|j| {
                j.common
                    .public_key_use
                    .as_ref()
                    .is_none_or(|u| *u == PublicKeyUse::Signature)
            })
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        if let Some(key_alg) = jwk.common.key_algorithm
            && key_alg != KeyAlgorithm::from(alg)
        {
            return Err(TokenError::Algorithm(alg_name.to_owned()));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey(kid.clone()))?;
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    TokenError::Algorithm(alg_name.to_owned())
                }
                _ => TokenError::Malformed(e.to_string()),
            },
        )?;
        if !data.claims.is_object() {
            return Err(TokenError::Malformed("claims are not an object".into()));
        }
        Ok(VerifiedJws {
            typ: header
                .get("typ")
                .and_then(|t| t.as_str())
                .map(str::to_owned),
            claims: data.claims,
        })
    }
}

/// Why the providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OidcSetupError {
    /// A client secret is missing or unreadable.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] IdpError),
}

/// The core's view of a configured provider.
pub fn provider_view(c: &ProviderConfig) -> Provider {
    Provider {
        id: c.id.clone(),
        name: c.name.clone(),
        issuer: c.issuer.clone(),
        client_id: c.client_id.clone(),
        trusted_audiences: c.trusted_audiences.clone(),
        scopes: c.scopes.clone(),
        principal_claim: c.principal_claim.clone(),
        redirect_uris: c.redirect_uris.clone(),
        allowed_algs: c.allowed_algs.clone(),
        invite_required: c.invite_required,
        logout_effect: c.logout,
    }
}

/// Builds the core's provider views and the HTTP client from configuration (reading client secrets).
pub fn build(
    providers: &[ProviderConfig],
    timeout: Duration,
) -> Result<(Vec<Provider>, Arc<HttpOidcClient>), OidcSetupError> {
    let mut runtimes = vec![];
    for c in providers {
        let secret = crate::secrets::read_secret(
            c.client_secret_file.as_deref(),
            c.client_secret_env.as_deref(),
        )?;
        runtimes.push(ProviderRuntime {
            config: c.clone(),
            secret,
        });
    }
    let views = providers.iter().map(provider_view).collect();
    Ok((views, Arc::new(HttpOidcClient::new(runtimes, timeout)?)))
}
