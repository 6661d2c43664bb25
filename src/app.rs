//! The state every handler shares: the live sessions, the providers, the API keys,
//! the `Idempotency-Key` records and the runtime of turns, built once from the
//! configuration. The router and the server around it are `server.rs`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::idempotency::{IdempotencyLimits, IdempotencyRecords};
use crate::keys::ApiKeys;
use crate::memory::{self, MemoryBudget};
use crate::provider::ProviderRegistry;
use crate::session::feed::FeedLimits;
use crate::session::records::Retention;
use crate::session::runtime::{RetryPolicy, Runtime, RuntimeSettings};
use crate::session::{Limits, LiveSessions, Settings};
use crate::store::Store;

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

/// What the handlers share.
#[derive(Debug)]
pub struct AppInner {
    /// Every live session.
    pub sessions: LiveSessions,
    /// The configured providers.
    pub providers: ProviderRegistry,
    /// The API keys; none means open (local use only).
    pub api_keys: ApiKeys,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_read_timeout: Duration,
    /// What the service holds for its clients, in bytes, against its budget.
    pub memory: Arc<MemoryBudget>,
    /// Remembered answers for `Idempotency-Key`.
    pub idempotency: IdempotencyRecords,
    /// Settings every session shares.
    pub settings: Settings,
    /// How long an events token opens streams.
    pub events_token_ttl: Duration,
    /// What every turn shares: metrics, provider slots, retries, shutdown.
    pub runtime: Arc<Runtime>,
    /// Sends requests on to the process serving their session (several processes on
    /// one Postgres).
    pub forwarder: reqwest::Client,
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

impl AppState {
    /// Builds the state from the configuration (providers and their clients included)
    /// over an opened store.
    pub fn new(config: &Config, clock: Clock, store: Store) -> Result<Self, ConfigError> {
        let api_keys = config.api_keys()?;
        let memory = memory_budget(config, !api_keys.is_empty());
        let settings = Settings {
            max_waiting_per_session: config.max_waiting_per_session,
            limits: Limits {
                message_chars: config.max_message_chars,
                messages: config.max_messages_per_session,
                tools: config.max_tools_per_session,
                metadata_bytes: config.max_metadata_bytes,
            },
            turns: Retention {
                records: config.turns_keep,
                failed: config.failed_turns_keep,
                max_age: Duration::from_secs(config.turns_max_age_secs),
                events: config.turn_events_keep,
                events_ttl: Duration::from_secs(config.turn_events_ttl_secs),
            },
            feed: FeedLimits {
                events: config.feed_events,
                bytes: config.feed_bytes,
            },
        };
        let runtime = RuntimeSettings {
            max_concurrent_turns: config.max_concurrent_turns,
            max_waiting_turns: config.max_waiting_turns,
            provider_timeout: config.provider_timeout(),
            retry: RetryPolicy {
                max_retries: config.provider_max_retries,
                base: Duration::from_millis(config.provider_retry_base_ms),
                cap: Duration::from_millis(config.provider_retry_max_ms),
            },
            log_content: config.log_content,
        };
        Ok(Self {
            inner: Arc::new(AppInner {
                sessions: live_sessions(config, clock.clone(), store.is_durable()),
                providers: ProviderRegistry::from_config(config)?,
                api_keys: ApiKeys::new(&api_keys),
                max_body_bytes: config.max_body_bytes,
                body_read_timeout: Duration::from_secs_f64(config.body_read_timeout_secs),
                idempotency: IdempotencyRecords::new(
                    IdempotencyLimits {
                        ttl: Duration::from_secs(config.idempotency_ttl_secs),
                        max_keys: config.idempotency_max_keys,
                        max_bytes: config.idempotency_max_bytes,
                    },
                    clock,
                    memory.clone(),
                ),
                memory,
                settings,
                events_token_ttl: Duration::from_secs(config.events_token_ttl_secs),
                runtime: Arc::new(Runtime::new(runtime, store)),
                forwarder: forwarder()?,
            }),
        })
    }
}

/// The client requests are forwarded with: no overall timeout (streams last), no
/// redirect followed, no proxy from the environment, connections kept.
fn forwarder() -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| ConfigError::new(format!("the forwarding client: {e}")))
}

/// `MEMORY_BUDGET_BYTES` (0: half the machine's memory) and `MEMORY_PER_KEY_BYTES` (0:
/// half the budget with API keys on, so one key cannot take it all; all of it without).
fn memory_budget(config: &Config, keys_on: bool) -> Arc<MemoryBudget> {
    let budget = match config.memory_budget_bytes {
        0 => memory::machine_bytes().map_or(4 << 30, |bytes| bytes / 2),
        bytes => bytes,
    };
    let per_key = match config.memory_per_key_bytes {
        0 if keys_on => budget / 2,
        0 => budget,
        bytes => bytes,
    };
    let caches = config.history_cache_bytes.min(budget / 8);
    MemoryBudget::with_caches(budget, per_key, caches)
}

/// The live sessions; with a durable store, at most `MAX_LIVE_SESSIONS` of them.
fn live_sessions(config: &Config, clock: Clock, durable: bool) -> LiveSessions {
    let live = LiveSessions::new(
        config.max_sessions,
        config.max_sessions_per_key,
        Duration::from_secs_f64(config.session_ttl_secs),
        clock,
    );
    if durable {
        live.evicting_past(config.max_live_sessions)
    } else {
        live
    }
}
