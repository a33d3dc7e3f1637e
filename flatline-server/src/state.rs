//! The composition root: every core service built once over the store, clock and randomness, with the process's
//! chat hub — what handlers reach through [`AppState`].

use std::sync::Arc;

use flatline_core::account::Accounts;
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

use crate::config::{ConfigError, Settings};
use crate::metrics::Metrics;

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
    /// `/healthz`'s one-probe-at-a-time database check.
    pub health: Arc<crate::http::health::HealthCheck>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// IPv6 clients share per-IP limiter buckets per network of this prefix length (`server.ipv6_limit_prefix`).
    pub ipv6_limit_prefix: u8,
    /// The validated configuration the server runs with.
    pub config: Arc<Settings>,
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
    Oidc(#[from] crate::oidc::OidcSetupError),
    /// The object store could not be set up.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageSetupError),
}

impl AppState {
    /// Wires services over `store`, `clock` and `rng` according to `config`, with the configured identity
    /// providers (client secrets and the principal secret are read now).
    pub fn new(
        config: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
    ) -> Result<Self, SetupError> {
        let principal_secret = crate::secrets::load_or_create_hex(
            &config.registration.principal_secret_file,
            32,
            rng.as_ref(),
        )?;
        let (providers, client) =
            crate::oidc::build(&config.providers, config.registration.idp_timeout)?;
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
        config: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        oidc: OidcParts,
    ) -> Result<Self, SetupError> {
        let limiters = RateLimiters::new(store.clone(), clock.clone(), config.limits.clone());
        let storage = Arc::new(crate::storage::Storage::new(
            crate::storage::from_settings(&config.storage.objects)?,
            crate::storage::derive_secret(&oidc.principal_secret),
            config.storage.clone(),
        ));
        // Link tokens are HMAC'd with a key derived from the principal secret: stable across restarts and shared by
        // every process of the instance, as tokens must be.
        let settings_principal_secret = oidc.principal_secret.clone();
        let settings = RegistrationSettings {
            session_lifetime: config.registration.session_lifetime,
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
            config.messages,
        );
        chat.set_delivery_loop(Arc::new(crate::chat::MessageDelivery::new(
            messages.clone(),
        )));
        let contacts_config = config.contacts.clone();
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
            config.devices,
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
                config.invites.policy.clone(),
            ),
            trusted_proxies: config.server.trusted_proxies.clone(),
            ipv6_limit_prefix: config.server.ipv6_limit_prefix,
            metrics: Arc::new(Metrics::new()),
            health: Arc::default(),
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
