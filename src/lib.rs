//! Lattice: a Matrix homeserver.
//!
//! [`Homeserver`] is built from a [`Config`] and serves the Client-Server API
//! as an axum [`Router`](axum::Router), either on its own listener
//! ([`Homeserver::serve`]) or mounted into another axum application
//! ([`Homeserver::router`]).

pub mod api;
pub mod appservice;
pub mod config;
pub mod e2ee;
pub mod ephemeral;
pub mod error;
pub mod federation;
pub mod media;
pub mod policy;
pub mod push;
pub mod rate_limit;
pub mod rooms;
pub mod search_index;
pub mod signing_key;
pub mod storage;
pub mod sync;
pub mod users;

use std::{sync::Arc, time::Duration};

use ruma::{OwnedServerName, RoomVersionId};
use tokio::sync::watch;

pub use crate::config::Config;
use crate::{
    appservice::{AppServices, client::AppServiceClient},
    ephemeral::typing::Typing,
    policy::{OpenPolicy, ProfessionalPolicy, RoomPolicy},
    rate_limit::RateLimiter,
    rooms::Rooms,
    signing_key::SigningKey,
    storage::Db,
    sync::notifier::Notifier,
    users::Users,
};

/// Everything the request handlers use, shared behind an `Arc`.
pub struct Services {
    pub config: Config,
    pub server_name: OwnedServerName,
    pub db: Db,
    pub key: Arc<SigningKey>,
    pub users: Users,
    pub rooms: Rooms,
    pub notifier: Arc<Notifier>,
    pub typing: Typing,
    pub rate_limiter: RateLimiter,
    pub uiaa: api::client::uiaa::Sessions,
    pub media: media::Media,
    pub federation: federation::Federation,
    /// Delivers queued PDUs and EDUs to other servers.
    pub sender: federation::sender::Sender,
    /// The application services registered in `appservice.registrations`.
    pub appservices: Arc<AppServices>,
    pub appservice_client: AppServiceClient,
    pub push: Arc<push::Push>,
    pub mailer: push::email::Mailer,
    /// Keeps the full-text search index behind the event stream.
    pub search_index: search_index::SearchIndex,
}

impl Services {
    /// Takes one request from a user's rate limit. Application service users
    /// exempt from limits (senders, and namespace users of registrations with
    /// `rate_limited: false`) are not counted.
    pub fn check_user_rate_limit(&self, user_id: &ruma::UserId) -> error::Result<()> {
        if self.appservices.is_exempt_from_limits(user_id) {
            return Ok(());
        }
        self.rate_limiter.check(user_id.as_str())
    }
}

/// A failure to start the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Database(#[from] storage::OpenError),
    #[error("could not open the media store: {0}")]
    Media(std::io::Error),
    #[error(transparent)]
    AppService(#[from] appservice::RegistrationError),
    #[error("could not create the sender of application service {id}: {message}")]
    AppServiceSender { id: String, message: String },
    #[error("signing key: {0}")]
    SigningKey(String),
    #[error("federation: {0}")]
    Federation(String),
    #[error("could not listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// A running homeserver: its services and background tasks.
#[derive(Clone)]
pub struct Homeserver {
    services: Arc<Services>,
    shutdown: watch::Sender<bool>,
}

/// Stops a [`Homeserver`]: background tasks end, queued writes commit, and
/// the database closes.
#[derive(Clone)]
pub struct ShutdownHandle {
    services: Arc<Services>,
    shutdown: watch::Sender<bool>,
}

impl ShutdownHandle {
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.services.db.close().await;
        tracing::info!("homeserver stopped");
    }
}

impl Homeserver {
    /// Opens the database, loads or creates the signing key, and starts the
    /// background tasks, with the room policy that `policy.name` names.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        Self::start(config, None).await
    }

    /// Like [`Homeserver::new`], with a room policy supplied by the embedding application.
    pub async fn with_policy(config: Config, policy: Arc<dyn RoomPolicy>) -> Result<Self, StartError> {
        Self::start(config, Some(policy)).await
    }

    async fn start(config: Config, policy: Option<Arc<dyn RoomPolicy>>) -> Result<Self, StartError> {
        config.validate()?;
        let server_name = OwnedServerName::try_from(config.server_name.as_str())
            .map_err(|e| config::ConfigError::invalid(format!("server_name: {e}")))?;
        // Registrations are checked before the database opens, so a bad file stops the start at once.
        let appservices = Arc::new(AppServices::load(&config.appservice.registrations, &server_name)?);
        let url = config.database_url();
        let db = Db::open(&url, config.database.max_connections).await?;

        let policy: Arc<dyn RoomPolicy> = match policy {
            Some(policy) => policy,
            None if config.policy.name == "professional" => Arc::new(
                ProfessionalPolicy::new(db.clone(), config.policy.clone()).with_appservices(appservices.clone()),
            ),
            None => Arc::new(OpenPolicy),
        };
        tracing::info!(server_name = %server_name, database = %redact_url(&url), policy = policy.name(), "database ready");
        let key = Arc::new(SigningKey::load_or_generate(&db).await.map_err(StartError::SigningKey)?);
        let notifier = Arc::new(Notifier::default());
        let default_version = RoomVersionId::try_from(config.rooms.default_version.as_str())
            .map_err(|e| config::ConfigError::invalid(format!("rooms.default_version: {e}")))?;
        let ignored = Arc::new(users::ignored::IgnoredUsers::new(db.clone()));
        let push = Arc::new(push::Push::new(db.clone(), server_name.clone(), config.push.enabled, ignored.clone()));
        let rooms = Rooms::new(
            db.clone(),
            server_name.clone(),
            key.clone(),
            notifier.clone(),
            policy,
            push.clone(),
            default_version,
        );
        let federation =
            federation::Federation::new(db.clone(), server_name.clone(), key.clone(), config.federation.clone())
                .map_err(StartError::Federation)?;
        let (shutdown, _) = watch::channel(false);
        let sender = federation::sender::Sender::new(db.clone(), federation.clone(), shutdown.subscribe());
        rooms.set_sender(sender.clone());
        let media = media::Media::new(
            db.clone(),
            server_name.clone(),
            &config.data_dir,
            config.media.clone(),
            media::quota_info_uri(&config),
            federation.clone(),
        )
        .map_err(StartError::Media)?;
        let mailer = push::email::Mailer::new(&config.email);
        let search_index = search_index::SearchIndex::new(db.clone());
        let services = Arc::new(Services {
            media,
            federation,
            sender,
            users: Users::new(db.clone(), server_name.clone(), ignored),
            rate_limiter: RateLimiter::new(&config.rate_limits),
            uiaa: api::client::uiaa::Sessions::default(),
            typing: Typing::default(),
            appservices,
            appservice_client: AppServiceClient::new(),
            config,
            server_name,
            db,
            key,
            rooms,
            notifier,
            push,
            mailer,
            search_index,
        });
        if let Err(err) = services.sender.resume().await {
            tracing::warn!(error = %err, "could not resume the federation outbox");
        }
        create_appservice_senders(&services).await?;
        let server = Self { services, shutdown };
        server.spawn_background_tasks();
        Ok(server)
    }

    fn spawn_background_tasks(&self) {
        appservice::sender::spawn(&self.services, &self.shutdown.subscribe());
        push::gateway::spawn(self.services.clone(), self.shutdown.subscribe());
        push::email::spawn_notifier(self.services.clone(), self.shutdown.subscribe());
        push::prune::spawn(self.services.clone(), self.shutdown.subscribe());
        search_index::spawn(self.services.clone(), self.shutdown.subscribe());
        let services = self.services.clone();
        let mut stop = self.shutdown.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                for room_id in services.typing.expire() {
                    if let Ok(room) = services.rooms.state(&room_id).await {
                        let members = room.local_members(&services.server_name);
                        services.notifier.wake(members.iter().map(|u| &**u));
                    }
                }
            }
        });
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The Client-Server API and discovery endpoints, ready to mount.
    pub fn router(&self) -> axum::Router {
        api::router(self.services.clone())
    }

    /// Builds the Server-Server API router alone, as the federation listener serves it.
    pub fn federation_router(&self) -> axum::Router {
        api::federation_router(self.services.clone())
    }

    /// Serves the Server-Server API over TLS on `listener`, with the
    /// certificate and key of `federation.tls_certificate` and
    /// `federation.tls_private_key`, until the server shuts down.
    pub fn spawn_federation_listener(&self, listener: tokio::net::TcpListener) -> Result<(), StartError> {
        let config = &self.services.config.federation;
        let (Some(certificate), Some(key)) = (&config.tls_certificate, &config.tls_private_key) else {
            return Err(StartError::Federation(
                "the federation listener needs federation.tls_certificate and federation.tls_private_key".into(),
            ));
        };
        let tls = federation::tls::server_config(certificate, key).map_err(StartError::Federation)?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, server_name = %self.services.server_name, "listening for federation (TLS)");
        }
        let app = self.federation_router();
        tokio::spawn(api::federation::listener::serve_tls(listener, Arc::new(tls), app, self.shutdown.subscribe()));
        Ok(())
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { services: self.services.clone(), shutdown: self.shutdown.clone() }
    }

    /// Serves the API on the configured client listener until `stop` resolves.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        let addr = self.services.config.listen.client;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!(%addr, server_name = %self.services.server_name, "listening for clients");
        if let Some(federation_addr) = self.services.config.listen.federation {
            let federation_listener = tokio::net::TcpListener::bind(federation_addr)
                .await
                .map_err(|source| StartError::Listen { addr: federation_addr, source })?;
            self.spawn_federation_listener(federation_listener)?;
        }
        let handle = self.shutdown_handle();
        let app = self.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
        let result = axum::serve(listener, app).with_graceful_shutdown(stop).await;
        handle.shutdown().await;
        result.map_err(|source| StartError::Listen { addr, source })
    }
}

/// Creates the `sender_localpart` user of each application service that lacks one.
async fn create_appservice_senders(services: &Services) -> Result<(), StartError> {
    for registration in services.appservices.iter() {
        let failed =
            |err: error::Error| StartError::AppServiceSender { id: registration.id.clone(), message: err.message };
        if services.users.is_available(&registration.sender).await.map_err(failed)? {
            services.users.create(&registration.sender, None, false).await.map_err(failed)?;
        }
        tracing::info!(appservice = %registration.id, sender = %registration.sender, "application service registered");
    }
    Ok(())
}

/// The database URL without a password, for logs.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
