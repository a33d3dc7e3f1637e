//! Embedding `flatline-core` without the server: the core's services wired by hand on the test kit's
//! [`MemoryStore`], a clock, a random source and an identity provider living in this process, then the flow an app
//! goes through — registration → authentication → prekeys → username.
//!
//! ```text
//! cargo run -p flatline-core --example embed
//! ```
//!
//! It prints each step and exits non-zero, naming the step, on any unexpected outcome, so it doubles as a smoke
//! test; `cargo test -p flatline-core --example embed` runs the same flow on a mock clock and a seeded RNG, and on
//! the system clock and the OS random source (`cargo test --workspace` includes it).
//!
//! What an embedder supplies (see docs/EMBEDDING.md):
//! - storage: one value implementing [`flatline_core::store::Store`] (here the test kit's `MemoryStore`; the
//!   server has SQLite and PostgreSQL stores);
//! - time and randomness: a [`Clock`] and a [`SecureRandom`] ([`SystemClock`] and [`OsRandom`] below are the
//!   whole of it; tests use the test kit's `MockClock` and `SeededRng` instead);
//! - OpenID Connect I/O: an [`OidcClient`] (PAR, code exchange, JWKS — HTTP in a real deployment) and a
//!   [`JwsVerifier`] (signature checks). The claim checks (`iss`, `aud`, `exp`, `nonce` …) are the core's.
//!
//! What the core does not know: HTTP and wire JSON. The [`wire`] module below maps the JSON bodies the simulated
//! client produces to the core's decoded request types, the job `flatline-server/src/http/` does.

use std::collections::HashMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use flatline_core::auth::{AuthError, AuthenticatedDevice, Authenticator};
use flatline_core::credentials::DeviceCredentials;
use flatline_core::ids::{IdentityType, ServiceId};
use flatline_core::keys::{DeviceSelector, KeyService, PreKeyBundle, Requester};
use flatline_core::random::{SecureRandom, random_array};
use flatline_core::ratelimit::{Limits, RateLimiters};
use flatline_core::registration::oidc::{
    ExchangeError, IdpError, JwsVerifier, LogoutEffect, OidcClient, ParResponse, Provider,
    ProviderEndpoints, TokenError, VerifiedJws,
};
use flatline_core::registration::{
    Registration, RegistrationSettings, StartRequest, VerifyRequest,
};
use flatline_core::store::Store;
use flatline_core::time::{Clock, Timestamp};
use flatline_core::usernames::{Usernames, UsernamesError};
use flatline_testkit::client::pkce;
use flatline_testkit::usernames::decrypt_username_link;
use flatline_testkit::{MemoryStore, SimClient, SimUsername, UsernameForm};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("embed: FAILED: no async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // What a real embedder passes. For reproducible runs (tests), pass the test kit's instead:
    // `Arc::new(flatline_testkit::MockClock::default())` and `Arc::new(flatline_testkit::SeededRng::new(7))`.
    match runtime.block_on(run(Arc::new(SystemClock), Arc::new(OsRandom))) {
        Ok(()) => {
            println!("embed: every step behaved as expected");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("embed: FAILED: {failure}");
            ExitCode::FAILURE
        }
    }
}

// --- Time and randomness: what a real embedder writes --------------------------------------------------------------

/// Wall-clock time (the same few lines as `flatline-server/src/system.rs`).
struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        clippy::disallowed_types,
        reason = "the embedder, not the core, reads the wall clock"
    )]
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The operating system's CSPRNG.
struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill(&self, dest: &mut [u8]) {
        // Without a CSPRNG nothing is safe (keys, session ids, salts); stopping is the only correct answer.
        if let Err(e) = getrandom::fill(dest) {
            panic!("the operating system random source failed: {e}");
        }
    }
}

// --- Failing loudly ------------------------------------------------------------------------------------------------

/// An unexpected outcome: the step, and what happened instead.
#[derive(Debug)]
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Outcome<T> = Result<T, Failure>;

/// Names the step a result belongs to.
trait Step<T> {
    fn step(self, what: &str) -> Outcome<T>;
}

impl<T, E: fmt::Display> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Outcome<T> {
        self.map_err(|e| Failure(format!("{what}: {e}")))
    }
}

impl<T> Step<T> for Option<T> {
    fn step(self, what: &str) -> Outcome<T> {
        self.ok_or_else(|| Failure(format!("{what}: nothing there")))
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Outcome<()> {
    if ok { Ok(()) } else { Err(Failure(what())) }
}

// --- An identity provider in this process --------------------------------------------------------------------------

const ISSUER: &str = "https://idp.embed.invalid";
const CLIENT_ID: &str = "flatline-embed";
const REDIRECT_URI: &str = "org.example.app:/oidc-callback";
const KEY_ID: &str = "embed-ed25519-1";
const CLIENT_IP: &str = "203.0.113.7";

/// An authorization request between PAR and code exchange.
#[derive(Clone)]
struct Authorization {
    redirect_uri: String,
    state: String,
    nonce: String,
    challenge: String,
    login: String,
}

#[derive(Default)]
struct IdpState {
    /// By PAR `request_uri`.
    requests: HashMap<String, Authorization>,
    /// By authorization code (single use).
    codes: HashMap<String, Authorization>,
}

/// An OpenID provider in this process: its PAR and token endpoints (as the core's [`OidcClient`]), its JWKS, and
/// the user's browser ([`InProcessIdp::approve`]). It signs ID tokens with a real Ed25519 key; the core checks
/// them with [`Ed25519JwsVerifier`] against the JWKS it pinned on first use. A real deployment implements
/// `OidcClient` over HTTP with client authentication (`flatline-server/src/oidc.rs`); in one process there is no
/// client to authenticate, so that part is left out.
struct InProcessIdp {
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    key: SigningKey,
    state: Mutex<IdpState>,
}

impl InProcessIdp {
    fn new(clock: Arc<dyn Clock>, rng: Arc<dyn SecureRandom>) -> Self {
        let key = SigningKey::from_bytes(&random_array(rng.as_ref()));
        InProcessIdp {
            clock,
            rng,
            key,
            state: Mutex::default(),
        }
    }

    /// The provider as the core is configured with it.
    fn provider() -> Provider {
        Provider {
            id: "embed".into(),
            name: "In-process IdP".into(),
            issuer: ISSUER.into(),
            client_id: CLIENT_ID.into(),
            trusted_audiences: vec![],
            scopes: vec!["openid".into(), "email".into()],
            // The verified e-mail becomes the principal; `None` would make it an opaque keyed hash of (issuer, sub).
            principal_claim: Some("email".into()),
            redirect_uris: vec![REDIRECT_URI.into()],
            allowed_algs: vec!["EdDSA".into()],
            invite_required: false,
            logout_effect: LogoutEffect::Lock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn random_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(random_array::<16>(self.rng.as_ref()))
    }

    /// The browser: `login` signs in and consents; the IdP redirects back with `(code, state, iss)`.
    fn approve(&self, request_uri: &str, login: &str) -> Option<(String, String, String)> {
        let mut state = self.lock();
        let mut request = state.requests.remove(request_uri)?;
        request.login = login.to_owned();
        let code = self.random_token();
        let returned_state = request.state.clone();
        state.codes.insert(code.clone(), request);
        Some((code, returned_state, ISSUER.to_owned()))
    }

    /// A compact JWS (`EdDSA`) over `claims`.
    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "kid": KEY_ID, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

#[async_trait]
impl OidcClient for InProcessIdp {
    async fn endpoints(&self, _provider: &Provider) -> Result<ProviderEndpoints, IdpError> {
        Ok(ProviderEndpoints {
            authorization: format!("{ISSUER}/authorize"),
            token: format!("{ISSUER}/token"),
            par: format!("{ISSUER}/par"),
            end_session: None,
        })
    }

    async fn push_authorization_request(
        &self,
        _provider: &Provider,
        params: &[(&str, &str)],
    ) -> Result<ParResponse, IdpError> {
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_default()
        };
        if param("response_type") != "code"
            || param("client_id") != CLIENT_ID
            || param("code_challenge_method") != "S256"
            || param("nonce").is_empty()
            || param("state").is_empty()
        {
            return Err(IdpError("invalid_request".into()));
        }
        let request_uri = format!("urn:ietf:params:oauth:request_uri:{}", self.random_token());
        let authorization = Authorization {
            redirect_uri: param("redirect_uri"),
            state: param("state"),
            nonce: param("nonce"),
            challenge: param("code_challenge"),
            login: param("login_hint"),
        };
        self.lock()
            .requests
            .insert(request_uri.clone(), authorization);
        Ok(ParResponse {
            request_uri,
            expires_in: 60,
        })
    }

    async fn exchange_code(
        &self,
        _provider: &Provider,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, ExchangeError> {
        // Single use: a replayed code finds nothing.
        let request = self
            .lock()
            .codes
            .remove(code)
            .ok_or(ExchangeError::InvalidGrant)?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if challenge != request.challenge || redirect_uri != request.redirect_uri {
            return Err(ExchangeError::InvalidGrant);
        }
        let now = self.clock.now().as_secs();
        Ok(self.sign(&json!({
            "iss": ISSUER, "aud": CLIENT_ID, "sub": format!("sub-{}", request.login),
            "iat": now, "exp": now + 300, "nonce": request.nonce,
            "email": format!("{}@example.org", request.login), "email_verified": true,
        })))
    }

    async fn fetch_jwks(&self, _provider: &Provider) -> Result<String, IdpError> {
        let x = URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes());
        Ok(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": KEY_ID, "alg": "EdDSA", "use": "sig"}]})
            .to_string())
    }
}

/// A compact-JWS verifier for Ed25519 keys (`EdDSA`) only, with real signature checks: the algorithm must be
/// allowed, the key is the pinned JWKS entry with the token's `kid`, the signature must verify (strictly). The
/// server's `JoseVerifier` does the same for RSA and ECDSA too through a JOSE library.
struct Ed25519JwsVerifier;

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))
}

impl JwsVerifier for Ed25519JwsVerifier {
    fn verify(
        &self,
        token: &str,
        jwks: &str,
        allowed_algs: &[String],
    ) -> Result<VerifiedJws, TokenError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not a compact JWS".into()));
        };
        let header: Value = serde_json::from_slice(&decode_part(h64, "header")?)
            .map_err(|_| TokenError::Malformed("header is not JSON".into()))?;
        let alg = header["alg"].as_str().unwrap_or("none");
        if alg != "EdDSA" || !allowed_algs.iter().any(|a| a == alg) {
            return Err(TokenError::Algorithm(alg.to_owned()));
        }
        if header.get("crit").is_some() {
            return Err(TokenError::Malformed(
                "no critical extension is supported".into(),
            ));
        }
        let kid = header["kid"].as_str().map(str::to_owned);
        let unknown = || TokenError::UnknownKey(kid.clone());
        let set: Value = serde_json::from_str(jwks)
            .map_err(|_| TokenError::Malformed("pinned JWKS is not JSON".into()))?;
        let jwk = set["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| kid.is_some() && k["kid"].as_str() == kid.as_deref())
            .ok_or_else(unknown)?;
        if jwk["kty"] != "OKP"
            || jwk["crv"] != "Ed25519"
            || jwk.get("alg").is_some_and(|a| a != "EdDSA")
            || jwk.get("use").is_some_and(|u| u != "sig")
        {
            return Err(unknown());
        }
        let x: [u8; 32] = jwk["x"]
            .as_str()
            .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
            .and_then(|x| x.try_into().ok())
            .ok_or_else(unknown)?;
        let key = VerifyingKey::from_bytes(&x).map_err(|_| unknown())?;
        let signature: [u8; 64] = decode_part(s64, "signature")?
            .try_into()
            .map_err(|_| TokenError::Signature)?;
        key.verify_strict(
            format!("{h64}.{p64}").as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| TokenError::Signature)?;
        let claims: Value = serde_json::from_slice(&decode_part(p64, "payload")?)
            .map_err(|_| TokenError::Malformed("payload is not JSON".into()))?;
        if !claims.is_object() {
            return Err(TokenError::Malformed("claims are not an object".into()));
        }
        Ok(VerifiedJws {
            typ: header["typ"].as_str().map(str::to_owned),
            claims,
        })
    }
}

// --- Wire JSON → core types (the server's DTO layer, for the bodies used here) ------------------------------------

mod wire {
    use base64::Engine as _;
    use base64::alphabet::STANDARD;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use flatline_core::account::RawAccountAttributes;
    use flatline_core::keys::{RawKey, RawKeyUpload};
    use flatline_core::registration::RawRegistration;
    use serde_json::Value;

    use super::{Failure, Outcome};

    /// Signal's JSON pads public keys and leaves signatures unpadded; accept both.
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );

    fn bytes(v: &Value, field: &str) -> Outcome<Vec<u8>> {
        v.as_str()
            .and_then(|s| BASE64.decode(s).ok())
            .ok_or_else(|| Failure(format!("{field} is not base64")))
    }

    fn key(v: &Value, field: &str) -> Outcome<RawKey> {
        Ok(RawKey {
            key_id: v["keyId"]
                .as_i64()
                .ok_or_else(|| Failure(format!("{field}.keyId is not a number")))?,
            public_key: bytes(&v["publicKey"], field)?,
            signature: match v.get("signature") {
                Some(s) => bytes(s, field)?,
                None => vec![],
            },
        })
    }

    fn keys(v: &Value, field: &str) -> Outcome<Vec<RawKey>> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|k| key(k, field))
            .collect()
    }

    fn optional_key(v: &Value, field: &str) -> Outcome<Option<RawKey>> {
        Ok(if v.is_null() {
            None
        } else {
            Some(key(v, field)?)
        })
    }

    /// `POST /v1/registration`.
    pub fn registration(body: &Value) -> Outcome<RawRegistration> {
        let a = &body["accountAttributes"];
        let attributes = RawAccountAttributes {
            fetches_messages: a["fetchesMessages"].as_bool().unwrap_or(false),
            registration_id: a["registrationId"].as_i64().unwrap_or(0),
            pni_registration_id: a["pniRegistrationId"].as_i64(),
            name: None,
            unidentified_access_key: match a.get("unidentifiedAccessKey") {
                Some(k) => Some(bytes(k, "unidentifiedAccessKey")?),
                None => None,
            },
            unrestricted_unidentified_access: a["unrestrictedUnidentifiedAccess"]
                .as_bool()
                .unwrap_or(false),
            discoverable_by_principal: a["discoverableByPrincipal"].as_bool().unwrap_or(false),
            capabilities: a["capabilities"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_bool().unwrap_or(false)))
                .collect(),
        };
        Ok(RawRegistration {
            session_id: body["sessionId"].as_str().map(str::to_owned),
            recovery_password: false,
            attributes: Some(attributes),
            aci_identity_key: Some(bytes(&body["aciIdentityKey"], "aciIdentityKey")?),
            pni_identity_key: Some(bytes(&body["pniIdentityKey"], "pniIdentityKey")?),
            aci_signed_pre_key: optional_key(&body["aciSignedPreKey"], "aciSignedPreKey")?,
            pni_signed_pre_key: optional_key(&body["pniSignedPreKey"], "pniSignedPreKey")?,
            aci_pq_last_resort: optional_key(
                &body["aciPqLastResortPreKey"],
                "aciPqLastResortPreKey",
            )?,
            pni_pq_last_resort: optional_key(
                &body["pniPqLastResortPreKey"],
                "pniPqLastResortPreKey",
            )?,
            push_tokens: 0,
        })
    }

    /// `PUT /v2/keys`.
    pub fn key_upload(body: &Value) -> Outcome<RawKeyUpload> {
        Ok(RawKeyUpload {
            ec: keys(&body["preKeys"], "preKeys")?,
            signed: optional_key(&body["signedPreKey"], "signedPreKey")?,
            kem: keys(&body["pqPreKeys"], "pqPreKeys")?,
            last_resort: optional_key(&body["pqLastResortPreKey"], "pqLastResortPreKey")?,
        })
    }
}

// --- The core, wired by hand ---------------------------------------------------------------------------------------

/// The services `flatline-server` builds in `AppState::with_oidc`, over one store.
struct Core {
    registration: Registration,
    auth: Authenticator,
    keys: KeyService,
    usernames: Usernames,
}

fn wire_core(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    idp: Arc<InProcessIdp>,
) -> Core {
    // Every limiter at Signal's defaults; buckets live in the store, so processes sharing a store share them.
    let limiters = RateLimiters::new(store.clone(), clock.clone(), Limits::default());
    let settings = RegistrationSettings {
        session_lifetime: Duration::from_secs(10 * 60),
        invite_required: false,
        // Keys the opaque principals and tombstones: a real embedder loads it from a secret, never regenerates it.
        principal_secret: Zeroizing::new(random_array::<32>(rng.as_ref()).to_vec()),
    };
    Core {
        registration: Registration::new(
            store.clone(),
            clock.clone(),
            rng.clone(),
            limiters.clone(),
            vec![InProcessIdp::provider()],
            idp,
            Arc::new(Ed25519JwsVerifier),
            settings,
        ),
        auth: Authenticator::new(store.clone(), clock.clone()),
        keys: KeyService::new(store.clone(), limiters.clone()),
        usernames: Usernames::new(store, limiters, clock, rng),
    }
}

// --- The flow ------------------------------------------------------------------------------------------------------

/// Registers a new account for `login` the way an app does: start a verification session, sign in at the IdP,
/// complete the session, register with fresh identity keys. Returns the client with its ACI and PNI filled in.
async fn register(
    core: &Core,
    idp: &InProcessIdp,
    login: &str,
    rng: &dyn SecureRandom,
) -> Outcome<SimClient> {
    let mut client = SimClient::new(rng);
    let (code_verifier, code_challenge) = pkce(rng);
    let app_state = URL_SAFE_NO_PAD.encode(random_array::<12>(rng));
    let started = core
        .registration
        .start(
            CLIENT_IP,
            StartRequest {
                provider_id: InProcessIdp::provider().id,
                code_challenge,
                state: app_state.clone(),
                redirect_uri: REDIRECT_URI.into(),
                login_hint: Some(login.into()),
                invite_code: None,
            },
        )
        .await
        .step("Registration::start")?;
    println!(
        "  {login}: session {:?} started; the app opens {}?client_id={}&request_uri={}",
        started.session.id,
        started.authorization_endpoint,
        started.client_id,
        started.session.request_uri
    );

    let (code, returned_state, iss) = idp
        .approve(&started.session.request_uri, login)
        .step("the IdP knows the pushed authorization request")?;
    ensure(returned_state == app_state, || {
        "the IdP returned another state".into()
    })?;
    let session = core
        .registration
        .verify(
            started.session.id.as_str(),
            VerifyRequest {
                code: code.clone(),
                code_verifier: code_verifier.clone(),
                state: returned_state.clone(),
                iss: Some(iss.clone()),
            },
        )
        .await
        .step("Registration::verify")?;
    let identity = session
        .verified
        .as_ref()
        .step("a verified session carries the identity")?;
    let principal = identity.principal.as_str().to_owned();
    println!(
        "  {login}: ID token verified; subject {:?}, principal {principal}",
        identity.subject.sub
    );
    // The IdP's code is single use; so is the session.
    let replay = core
        .registration
        .verify(
            started.session.id.as_str(),
            VerifyRequest {
                code,
                code_verifier,
                state: returned_state,
                iss: Some(iss),
            },
        )
        .await;
    ensure(replay.is_err(), || {
        "a verified session was verified twice".into()
    })?;

    let body = client.registration_body(started.session.id.as_str(), rng);
    let registered = core
        .registration
        .register(
            &client.registration_auth(&principal),
            "192.0.2.1",
            wire::registration(&body)?,
        )
        .await
        .step("Registration::register")?;
    ensure(!registered.reregistration, || {
        format!("{login} was re-registered, not created")
    })?;
    ensure(registered.account.principal.as_str() == principal, || {
        "the account has another principal than the session".into()
    })?;
    client.aci = registered.account.aci;
    client.pni = registered.account.pni;
    println!(
        "  {login}: registered as ACI {} (PNI {})",
        client.aci, client.pni
    );
    Ok(client)
}

/// Authenticates `client`'s primary device with its Basic credentials, after checking a wrong password fails.
async fn authenticate(core: &Core, client: &SimClient) -> Outcome<AuthenticatedDevice> {
    let header = client.basic_auth(UsernameForm::Dot);
    let wrong = DeviceCredentials {
        password: format!("{}x", client.password),
        ..DeviceCredentials::from_header(&header).step("Basic credentials parse")?
    };
    ensure(
        matches!(
            core.auth.authenticate(&wrong).await,
            Err(AuthError::WrongPassword)
        ),
        || "a wrong password was not refused as such".into(),
    )?;
    let credentials = DeviceCredentials::from_header(&header).step("Basic credentials parse")?;
    let device = core
        .auth
        .authenticate(&credentials)
        .await
        .step("Authenticator::authenticate")?;
    ensure(device.account.aci == client.aci, || {
        "authenticated as another account".into()
    })?;
    Ok(device)
}

async fn fetch(
    core: &Core,
    caller: &AuthenticatedDevice,
    target: &SimClient,
) -> Outcome<PreKeyBundle> {
    core.keys
        .fetch(
            &Requester::Device(Box::new(caller.clone())),
            ServiceId::Aci(target.aci),
            DeviceSelector::All,
        )
        .await
        .step("KeyService::fetch")
}

/// The whole flow. Every step checks its outcome; the first surprise ends it with a [`Failure`].
async fn run(clock: Arc<dyn Clock>, rng: Arc<dyn SecureRandom>) -> Outcome<()> {
    let store = Arc::new(MemoryStore::new());
    let idp = Arc::new(InProcessIdp::new(clock.clone(), rng.clone()));
    let core = wire_core(store, clock, rng.clone(), idp.clone());
    let rng = rng.as_ref();

    println!("1. registration: OIDC verification session, then the account");
    let alice = register(&core, &idp, "alice", rng).await?;

    println!("2. authentication with the new device credentials");
    let alice_device = authenticate(&core, &alice).await?;
    println!(
        "  alice: device {} authenticated (a wrong password is refused)",
        alice_device.device_id
    );

    println!(
        "3. prekeys: alice uploads one one-time EC key, one one-time Kyber key, new signed and last-resort keys"
    );
    // Key ids: one-time 100, signed 10100, last-resort 20100 (see `SimClient::set_keys_body`).
    let upload = alice.set_keys_body(IdentityType::Aci, 100, 1, 1, rng);
    core.keys
        .upload(
            &alice_device,
            IdentityType::Aci,
            &wire::key_upload(&upload)?,
        )
        .await
        .step("KeyService::upload")?;
    let counts = core
        .keys
        .counts(&alice_device, IdentityType::Aci)
        .await
        .step("KeyService::counts")?;
    ensure((counts.ec, counts.kem) == (1, 1), || {
        format!("after the upload alice has {counts:?} one-time keys, not 1 + 1")
    })?;
    println!(
        "  alice: {} EC + {} Kyber one-time keys stored",
        counts.ec, counts.kem
    );

    println!("4. a second account fetches alice's bundle twice");
    let bob = register(&core, &idp, "bob", rng).await?;
    let bob_device = authenticate(&core, &bob).await?;
    let first = fetch(&core, &bob_device, &alice).await?;
    ensure(
        first.identity_key == alice.aci_identity.public_key.serialize().to_vec(),
        || "the bundle carries another identity key".into(),
    )?;
    let [device] = first.devices.as_slice() else {
        return Err(Failure(format!(
            "expected one device in the bundle, got {}",
            first.devices.len()
        )));
    };
    let ids = (
        device.signed.key_id.get(),
        device.one_time.as_ref().map(|k| k.key_id.get()),
        device.kem.key_id.get(),
    );
    ensure(ids == (10_100, Some(100), 100), || {
        format!(
            "first fetch served (signed, one-time EC, Kyber) = {ids:?}, expected (10100, Some(100), 100)"
        )
    })?;
    println!("  bob: first fetch got signed 10100, one-time EC 100, one-time Kyber 100");
    let second = fetch(&core, &bob_device, &alice).await?;
    let [device] = second.devices.as_slice() else {
        return Err(Failure("expected one device in the second bundle".into()));
    };
    let ids = (
        device.one_time.as_ref().map(|k| k.key_id.get()),
        device.kem.key_id.get(),
    );
    ensure(ids == (None, 20_100), || {
        format!(
            "second fetch served (one-time EC, Kyber) = {ids:?}, expected (None, 20100): a one-time key twice?"
        )
    })?;
    println!(
        "  bob: second fetch got no one-time EC key and the last-resort Kyber key 20100 (one-time keys are served once)"
    );

    println!("5. usernames: alice reserves and confirms one; it is looked up by hash");
    let name = SimUsername::pick("alice", rng);
    let reserved = core
        .usernames
        .reserve(&alice_device, &[name.hash.to_vec()])
        .await
        .step("Usernames::reserve")?;
    ensure(reserved == name.hash, || "another hash was reserved".into())?;
    let taken = core
        .usernames
        .reserve(&bob_device, &[name.hash.to_vec()])
        .await;
    ensure(matches!(taken, Err(UsernamesError::Unavailable)), || {
        format!("bob reserving alice's reserved hash: expected Unavailable, got {taken:?}")
    })?;
    let confirmed = core
        .usernames
        .confirm(
            &alice_device,
            &name.hash,
            &name.proof(rng),
            Some(&name.link_blob(rng)),
        )
        .await
        .step("Usernames::confirm")?;
    ensure(confirmed.hash == name.hash, || {
        "another hash was confirmed".into()
    })?;
    println!(
        "  alice: {} confirmed (hash {}); bob could not reserve it",
        name.name,
        name.hash_b64()
    );
    let owner = core
        .usernames
        .lookup(CLIENT_IP, Some(&name.hash))
        .await
        .step("Usernames::lookup")?;
    ensure(owner == alice.aci, || {
        format!("the hash belongs to {owner}, not alice")
    })?;
    let blob = core
        .usernames
        .link(CLIENT_IP, confirmed.link_handle)
        .await
        .step("Usernames::link")?;
    let linked = decrypt_username_link(&name.entropy, &blob)
        .map_err(|e| Failure(format!("decrypting the link blob: {e:?}")))?;
    ensure(linked == name.name, || {
        format!("the link decrypts to {linked:?}, not {:?}", name.name)
    })?;
    println!("  lookup by hash: {owner} (alice); the username link decrypts to {linked}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use flatline_testkit::{MockClock, SeededRng};

    use super::*;

    #[tokio::test]
    async fn the_flow_runs_on_a_mock_clock_and_a_seeded_rng() {
        let result = run(Arc::new(MockClock::default()), Arc::new(SeededRng::new(7))).await;
        assert!(
            result.is_ok(),
            "{}",
            result.err().map(|f| f.0).unwrap_or_default()
        );
    }

    #[tokio::test]
    async fn the_flow_runs_on_the_system_clock_and_the_os_random_source() {
        let result = run(Arc::new(SystemClock), Arc::new(OsRandom)).await;
        assert!(
            result.is_ok(),
            "{}",
            result.err().map(|f| f.0).unwrap_or_default()
        );
    }

    /// The example's verifier is not vacuous: tampering, `alg: none` and unknown keys are refused.
    #[tokio::test]
    async fn the_example_verifier_checks_signatures() {
        let clock: Arc<dyn Clock> = Arc::new(MockClock::default());
        let idp = InProcessIdp::new(clock, Arc::new(SeededRng::new(1)));
        let jwks = idp.fetch_jwks(&InProcessIdp::provider()).await.unwrap();
        let allowed = ["EdDSA".to_owned()];
        let token = idp.sign(&json!({"sub": "alice"}));
        let ok = Ed25519JwsVerifier.verify(&token, &jwks, &allowed).unwrap();
        assert_eq!(ok.claims["sub"], "alice");
        assert_eq!(ok.typ.as_deref(), Some("JWT"));

        let (input, _) = token.rsplit_once('.').unwrap();
        let (header, _) = input.split_once('.').unwrap();
        let forged = format!(
            "{header}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"sub":"mallory"}"#)
        );
        let forged = format!("{forged}.{}", token.rsplit_once('.').unwrap().1);
        assert_eq!(
            Ed25519JwsVerifier.verify(&forged, &jwks, &allowed),
            Err(TokenError::Signature)
        );

        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"embed-ed25519-1"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"alice"}"#)
        );
        assert_eq!(
            Ed25519JwsVerifier.verify(&none, &jwks, &allowed),
            Err(TokenError::Algorithm("none".into()))
        );
        assert_eq!(
            Ed25519JwsVerifier.verify(&token, &jwks, &["ES256".to_owned()]),
            Err(TokenError::Algorithm("EdDSA".into()))
        );

        let other = InProcessIdp::new(Arc::new(MockClock::default()), Arc::new(SeededRng::new(2)));
        assert_eq!(
            Ed25519JwsVerifier.verify(&other.sign(&json!({"sub": "alice"})), &jwks, &allowed),
            Err(TokenError::Signature)
        );
        let no_key = json!({"keys": []}).to_string();
        assert_eq!(
            Ed25519JwsVerifier.verify(&token, &no_key, &allowed),
            Err(TokenError::UnknownKey(Some(KEY_ID.into())))
        );
    }
}
