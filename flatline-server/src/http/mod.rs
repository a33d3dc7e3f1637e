//! The HTTP API: one module per endpoint group, each with its own error enum and status table.
//!
//! Handlers extract and validate wire data, call one core service, and map the result to a wire DTO. Only this
//! module knows HTTP and JSON shapes.

pub mod accounts;
pub mod attachments;
pub mod certificates;
pub mod chat;
pub mod contacts;
pub mod devices;
pub mod error;
pub mod extract;
pub mod health;
pub mod invites;
pub mod keys;
pub mod manifest;
pub mod messages;
pub mod multi_recipient;
pub mod openapi;
pub mod profiles;
pub mod registration;
pub mod shortcodes;
pub mod usernames;
pub mod verification;
pub mod wire;
pub mod zk;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use flatline_core::accounts::Accounts;
use flatline_core::auth::Authenticator;
use flatline_core::contacts::Contacts;
use flatline_core::invites::Invites;
use flatline_core::keys::KeyService;
use flatline_core::messages::service::{MessageNotifier, MessageService};
use flatline_core::profiles::ProfileService;
use flatline_core::random::SecureRandom;
use flatline_core::ratelimit::RateLimiters;
use flatline_core::registration::oidc::{JwsVerifier, OidcClient, Provider};
use flatline_core::registration::{Registration, RegistrationSettings};
use flatline_core::shortcodes::{Shortcodes, ShortcodesConfig};
use flatline_core::store::Store;
use flatline_core::time::Clock;
use flatline_core::usernames::Usernames;
use ipnet::IpNet;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use error::ApiError;

/// Everything a handler may use: the [`Services`] behind one reference count, so that the `State<AppState>` each
/// request extracts costs one atomic increment (not a clone of every service's `Arc`s and secrets).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The composition of the core services, their store and the process's chat hub.
#[derive(Clone)]
pub struct Services {
    /// Every aggregate's store.
    pub store: Arc<dyn Store>,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// The randomness source.
    pub rng: Arc<dyn SecureRandom>,
    /// Named rate limiters over the shared buckets.
    pub limiters: RateLimiters,
    /// Device credential checks.
    pub auth: Authenticator,
    /// Account operations.
    pub accounts: Accounts,
    /// Prekey operations.
    pub keys: KeyService,
    /// Registration through identity providers.
    pub registration: Registration,
    /// Username operations and principal discovery.
    pub usernames: Usernames,
    /// Contact policies, invites, grants and introductions.
    pub contacts: Contacts,
    /// Contact shortcodes.
    pub shortcodes: Shortcodes,
    /// Registration invites (user API and operator operations).
    pub invites: Invites,
    /// Versioned profiles.
    pub profiles: ProfileService,
    /// Avatars and attachments: the object store, its signing secret and `[storage]`.
    pub storage: Arc<crate::storage::Storage>,
    /// Message sends, queues, acknowledgements and spam reports.
    pub messages: MessageService,
    /// Linked devices: link tokens, linking, removal.
    pub devices: flatline_core::devices::DeviceService,
    /// Live delivery hooks: told after every stored message, and handed online messages by the send handler.
    /// [`crate::chat::ChatNotifier`] (wakes the device's socket, pushes online messages) unless replaced with
    /// [`AppState::with_notifier`].
    pub notifier: Arc<dyn MessageNotifier>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// IPv6 clients share per-IP limiter buckets per network of this prefix length (`server.ipv6_limit_prefix`).
    pub ipv6_limit_prefix: u8,
    /// The configuration the server runs with.
    pub config: Arc<Config>,
    /// Instance keys and the signed manifest; `None` until [`AppState::with_trust`] (tests that do not need it).
    pub trust: Option<Arc<crate::trust::Trust>>,
    /// The chat transport: presence, socket counts, cluster events, delivery loop, provisioning registry.
    pub chat: Arc<crate::chat::ChatHub>,
}

/// The identity-provider side of the state, injectable so tests can substitute fakes.
pub struct OidcParts {
    /// The core's view of each provider.
    pub providers: Vec<Provider>,
    /// HTTP calls to providers.
    pub client: Arc<dyn OidcClient>,
    /// JWS verification.
    pub verifier: Arc<dyn JwsVerifier>,
    /// The principal secret.
    pub principal_secret: zeroize::Zeroizing<Vec<u8>>,
}

/// The server could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A secret could not be read or created.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// Provider setup failed.
    #[error(transparent)]
    Oidc(#[from] crate::oidc::SetupError),
}

impl AppState {
    /// Wires services over `store`, `clock` and `rng` according to `config`, with the configured identity
    /// providers (client secrets and the principal secret are read now).
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
    ) -> Result<Self, SetupError> {
        config.validate()?;
        let principal_secret = crate::secrets::load_or_create_hex(
            &config.registration.principal_secret_file,
            32,
            rng.as_ref(),
        )?;
        let timeout = Duration::from_secs(config.registration.idp_timeout_seconds);
        let (providers, client) = crate::oidc::build(&config.providers, timeout)?;
        let oidc = OidcParts {
            providers,
            client,
            verifier: Arc::new(crate::oidc::JoseVerifier),
            principal_secret,
        };
        Self::with_oidc(config, store, clock, rng, oidc)
    }

    /// Like [`AppState::new`] with the identity-provider parts given.
    pub fn with_oidc(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        oidc: OidcParts,
    ) -> Result<Self, SetupError> {
        config.validate()?;
        let limiters = RateLimiters::new(store.clone(), clock.clone(), config.limits.to_limits()?);
        let storage = Arc::new(crate::storage::Storage::new(
            Box::new(crate::storage::LocalStore::new(config.storage_path())),
            crate::storage::derive_secret(&oidc.principal_secret),
            config.storage.clone(),
        ));
        // Link tokens are HMAC'd with a key derived from the principal secret: stable across restarts and shared by
        // every process of the instance, as tokens must be.
        let settings_principal_secret = oidc.principal_secret.clone();
        let settings = RegistrationSettings {
            session_lifetime: Duration::from_secs(config.registration.session_lifetime_seconds),
            invite_required: config.invites.required,
            principal_secret: oidc.principal_secret,
        };
        let registration = Registration::new(
            store.clone(),
            clock.clone(),
            rng.clone(),
            limiters.clone(),
            oidc.providers,
            oidc.client,
            oidc.verifier,
            settings,
        );
        // Live delivery: stores wake the device's socket through the chat hub, whose delivery loop reads and
        // acknowledges through the same message service.
        let chat = crate::chat::ChatHub::new();
        let notifier: Arc<dyn MessageNotifier> = Arc::new(crate::chat::ChatNotifier::new(&chat));
        let messages = MessageService::new(
            store.clone(),
            clock.clone(),
            rng.clone(),
            limiters.clone(),
            notifier.clone(),
            config.messages.to_messages_config()?,
        );
        chat.set_delivery_loop(Arc::new(crate::chat::MessageDelivery::new(
            messages.clone(),
        )));
        let contacts_config = config.contacts.to_contacts_config()?;
        let shortcodes = Shortcodes::new(
            store.clone(),
            clock.clone(),
            rng.clone(),
            limiters.clone(),
            ShortcodesConfig {
                flood: contacts_config.flood,
                ..ShortcodesConfig::default()
            },
        );
        let devices = flatline_core::devices::DeviceService::new(
            store.clone(),
            clock.clone(),
            rng.clone(),
            limiters.clone(),
            derive_link_secret(&settings_principal_secret),
            config.devices.to_devices_config(),
        );
        Ok(AppState(Arc::new(Services {
            devices,
            profiles: ProfileService::new(store.clone(), rng.clone(), limiters.clone()),
            storage,
            messages,
            notifier,
            shortcodes,
            auth: Authenticator::new(store.clone(), clock.clone())
                .with_failure_limits(limiters.clone()),
            accounts: Accounts::new(store.clone(), clock.clone()),
            keys: KeyService::new(store.clone(), limiters.clone()),
            registration,
            usernames: Usernames::new(store.clone(), limiters.clone(), clock.clone(), rng.clone()),
            contacts: Contacts::new(
                store.clone(),
                clock.clone(),
                rng.clone(),
                limiters.clone(),
                contacts_config,
            ),
            invites: Invites::new(
                store.clone(),
                clock.clone(),
                rng.clone(),
                limiters.clone(),
                config.invites.to_policy()?,
            ),
            trusted_proxies: config.trusted_proxies()?.into(),
            ipv6_limit_prefix: config.server.ipv6_limit_prefix,
            metrics: Arc::new(Metrics::new()),
            chat,
            limiters,
            store,
            clock,
            rng,
            config: Arc::new(config),
            trust: None,
        })))
    }

    /// Replaces the live-delivery hooks (the chat socket's registry): the message service then tells `notifier`
    /// about every stored message, and the send handler hands it online messages.
    pub fn with_notifier(self, notifier: Arc<dyn MessageNotifier>) -> Self {
        let mut s = Arc::unwrap_or_clone(self.0);
        s.messages = MessageService::new(
            s.store.clone(),
            s.clock.clone(),
            s.rng.clone(),
            s.limiters.clone(),
            notifier.clone(),
            *s.messages.config(),
        );
        s.chat
            .set_delivery_loop(Arc::new(crate::chat::MessageDelivery::new(
                s.messages.clone(),
            )));
        s.notifier = notifier;
        AppState(Arc::new(s))
    }

    /// Adds the instance trust material (see [`crate::trust::Trust::bootstrap`]).
    pub fn with_trust(self, trust: Arc<crate::trust::Trust>) -> Self {
        let mut s = Arc::unwrap_or_clone(self.0);
        s.trust = Some(trust);
        AppState(Arc::new(s))
    }
}

/// The key that signs device link tokens, derived from the principal secret.
fn derive_link_secret(principal_secret: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    use sha2::{Digest, Sha256};
    zeroize::Zeroizing::new(
        Sha256::new()
            .chain_update(b"flatline link token secret v1\0")
            .chain_update(principal_secret)
            .finalize()
            .to_vec(),
    )
}

/// The whole application as one `Router`, ready for `axum::serve` or `tower::ServiceExt::oneshot`, serving its own
/// OpenAPI description at `/openapi.json`. Requests inside chat sockets are dispatched into this same router (the
/// [`crate::chat::socket::Tunnel`] extension), so they meet the same routes, limits and middleware as HTTP.
pub fn app(state: AppState) -> Router {
    let router = routes(state);
    router
        .clone()
        .layer(Extension(crate::chat::socket::Tunnel(router)))
}

fn routes(state: AppState) -> Router {
    let (router, api) = api_router(&state.config).split_for_parts();
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(Extension(openapi::Document::new(&api)))
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            signal_timestamp,
        ))
        .with_state(state)
}

/// Every route of the main listener, each registered together with its OpenAPI operation (see [`openapi`]).
pub fn api_router(config: &Config) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(keys::routes())
        .merge(verification::routes())
        .merge(registration::routes())
        .merge(usernames::routes())
        .merge(contacts::routes())
        .merge(shortcodes::routes())
        .merge(invites::routes())
        .merge(profiles::routes())
        .merge(attachments::routes())
        .merge(messages::routes(config))
        .merge(multi_recipient::routes())
        .merge(manifest::routes())
        .merge(zk::routes())
        .merge(certificates::routes())
        .merge(chat::routes())
        .merge(devices::routes())
        .merge(openapi::routes());
    if config.server.admin_listen.is_none() {
        router = router.merge(health::routes());
    }
    router
}

/// The OpenAPI description of the main listener for `config` (what `/openapi.json` serves).
pub fn openapi_document(config: &Config) -> utoipa::openapi::OpenApi {
    api_router(config).into_openapi()
}

/// The admin listener's router (`/healthz`, `/metrics`), when it is separate.
pub fn admin_app(state: AppState) -> Router {
    Router::from(health::routes()).with_state(state)
}

/// `X-Signal-Timestamp: <epoch ms>` on every response (M§1.1): libsignal only counts an upgrade error as the
/// server's answer when it carries this header, and reports the 101's value as the server time.
async fn signal_timestamp(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let now = state.clock.now().as_millis();
    response
        .headers_mut()
        .insert("x-signal-timestamp", axum::http::HeaderValue::from(now));
    response
}

/// The method as a metric label and log field: one of a closed set, so that arbitrary extension methods cannot
/// create unbounded label values or long log lines (security review F-01).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Routes that wait on purpose longer than `server.request_timeout_seconds`.
const LONG_POLL_ROUTES: &[&str] = &["/v1/devices/wait_for_linked_device/{tokenIdentifier}"];
/// TUS uploads (creation-with-upload and appends) read a body of up to `[storage] max_attachment_bytes` from clients on
/// slow links; an interrupted one is resumed from its offset, so a cut-off upload loses nothing.
const UPLOAD_ROUTES: &[(&str, &str)] = &[("POST", "/attachments"), ("PATCH", "/attachments/{key}")];
/// How long an upload request may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Times out slow requests, and records metrics and a log line for every request.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let mut timeout = Duration::from_secs(state.config.server.request_timeout_seconds);
    if LONG_POLL_ROUTES.contains(&route.as_str()) {
        // A long poll bounds its own wait (its `timeout` parameter).
        timeout += Duration::from_secs(devices::MAX_WAIT_SECONDS);
    }
    if UPLOAD_ROUTES.contains(&(method, route.as_str())) {
        timeout = timeout.max(UPLOAD_TIMEOUT);
    }
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "request took too long",
        )
        .into_response(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .request(method, &route, status, elapsed.as_secs_f64());
    if status == 429 {
        state.metrics.rate_limited(&route);
    }
    tracing::info!(target: "flatline::http", %method, %route, status, ms = elapsed.as_millis() as u64, "request");
    response
}
