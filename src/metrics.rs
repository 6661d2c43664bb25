//! The service's metrics in Prometheus' text format (OpenMetrics), one registry per
//! running service: no global state, so tests that run several services in one process
//! each see their own counts. What is measured is decided by the callers; this module
//! only names, labels and encodes.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric name starts with this.
const PREFIX: &str = "text_session";

/// `outcome`: `completed`, `failed`, `cancelled` or `rejected`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// `priority`: `interrupt`, `high`, `normal` or `low`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabel {
    pub priority: &'static str,
}

/// `provider`: the configured name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

/// `provider` and the error `kind` (see `ProviderError::kind`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderErrorLabels {
    pub provider: String,
    pub kind: &'static str,
}

/// `kind`: `unavailable` or `version_moved`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabel {
    pub kind: &'static str,
}

/// `provider` and `direction`: `input` or `output`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub provider: String,
    pub direction: &'static str,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn store_histogram() -> Histogram {
    // 50 µs to about 3 s: one commit (its fsync included).
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn micros_histogram() -> Histogram {
    // 10 µs to about 0.3 s: what the service itself adds to a turn.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 15))
}

/// Every metric the service keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub sessions_live: Gauge,
    pub writers_waiting: Gauge,
    pub writers_waiting_by_priority: Family<PriorityLabel, Gauge>,
    pub turns: Family<OutcomeLabel, Counter>,
    pub turn_duration: Histogram,
    pub lock_wait: Histogram,
    pub turn_overhead: Histogram,
    pub provider_duration: Family<ProviderLabel, Histogram>,
    pub provider_errors: Family<ProviderErrorLabels, Counter>,
    pub provider_retries: Family<ProviderLabel, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub provider_slots_waiting: Gauge,
    pub memory_held: Gauge,
    pub memory_budget: Gauge,
    pub history_cache: Gauge,
    pub sessions_stored: Gauge,
    pub store_commit: Histogram,
    pub store_errors: Family<StoreErrorLabel, Counter>,
    pub store_loads: Counter,
    pub requests_forwarded: Counter,
    pub leases_taken_over: Counter,
    pub turns_joined: Counter,
    pub joined_writers: Histogram,
    pub feed_followers: Gauge,
    pub feed_resyncs: Counter,
    /// Each provider's series of every call, looked up once (see [`ProviderMetrics`]).
    providers: RwLock<Vec<Arc<ProviderMetrics>>>,
}

/// The series of one provider that every call moves (its duration, its tokens), kept
/// once looked up: a family's lookup copies the provider's name into its labels and
/// hashes them, on every call otherwise.
#[derive(Debug)]
pub struct ProviderMetrics {
    name: String,
    duration: Histogram,
    input_tokens: Counter,
    output_tokens: Counter,
}

impl ProviderMetrics {
    /// Records one provider call.
    pub fn call(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts tokens in and out.
    pub fn tokens(&self, input: u64, output: u64) {
        self.input_tokens.inc_by(input);
        self.output_tokens.inc_by(output);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let metrics = Self {
            sessions_live: Gauge::default(),
            writers_waiting: Gauge::default(),
            writers_waiting_by_priority: Family::default(),
            turns: Family::default(),
            turn_duration: seconds_histogram(),
            lock_wait: seconds_histogram(),
            turn_overhead: micros_histogram(),
            provider_duration: Family::new_with_constructor(seconds_histogram),
            provider_errors: Family::default(),
            provider_retries: Family::default(),
            tokens: Family::default(),
            provider_slots_waiting: Gauge::default(),
            memory_held: Gauge::default(),
            history_cache: Gauge::default(),
            memory_budget: Gauge::default(),
            sessions_stored: Gauge::default(),
            store_commit: store_histogram(),
            store_errors: Family::default(),
            store_loads: Counter::default(),
            requests_forwarded: Counter::default(),
            leases_taken_over: Counter::default(),
            turns_joined: Counter::default(),
            joined_writers: Histogram::new([2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]),
            feed_followers: Gauge::default(),
            feed_resyncs: Counter::default(),
            providers: RwLock::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "sessions_live",
            "Sessions in memory",
            m.sessions_live.clone(),
        );
        registry.register(
            "writers_waiting",
            "Writers waiting for a session's turn lock, all sessions",
            m.writers_waiting.clone(),
        );
        registry.register(
            "writers_waiting_by_priority",
            "Writers waiting for a session's turn lock, by priority",
            m.writers_waiting_by_priority.clone(),
        );
        registry.register("turns", "Turns that ended, by outcome", m.turns.clone());
        registry.register(
            "turn_duration_seconds",
            "Time a turn held its session's turn lock",
            m.turn_duration.clone(),
        );
        registry.register(
            "lock_wait_seconds",
            "Time a turn waited for its session's turn lock",
            m.lock_wait.clone(),
        );
        registry.register(
            "turn_overhead_seconds",
            "Time the service itself added to a turn: its duration minus provider time",
            m.turn_overhead.clone(),
        );
        registry.register(
            "provider_request_duration_seconds",
            "Duration of one provider call, by provider",
            m.provider_duration.clone(),
        );
        registry.register(
            "provider_errors",
            "Failed provider calls, by provider and kind",
            m.provider_errors.clone(),
        );
        registry.register(
            "provider_retries",
            "Provider calls made again after a failure, by provider",
            m.provider_retries.clone(),
        );
        registry.register(
            "tokens",
            "Tokens sent and received, by provider and direction",
            m.tokens.clone(),
        );
        registry.register(
            "provider_slots_waiting",
            "Turns waiting for one of MAX_CONCURRENT_TURNS provider slots",
            m.provider_slots_waiting.clone(),
        );
        registry.register(
            "memory_held_bytes",
            "Bytes held for clients (histories, turn records and events, stored answers), estimated",
            m.memory_held.clone(),
        );
        registry.register(
            "memory_budget_bytes",
            "MEMORY_BUDGET_BYTES: past it new writes are refused",
            m.memory_budget.clone(),
        );
        registry.register(
            "history_cache_bytes",
            "Bytes of histories kept already written as JSON (bounded by HISTORY_CACHE_BYTES)",
            m.history_cache.clone(),
        );
        registry.register(
            "sessions_stored",
            "Sessions that exist, in memory or only in the store (what MAX_SESSIONS bounds)",
            m.sessions_stored.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "Time a turn's commit took in the store (durable when it returns)",
            m.store_commit.clone(),
        );
        registry.register(
            "store_errors",
            "Store calls that failed, by kind",
            m.store_errors.clone(),
        );
        registry.register(
            "store_loads",
            "Sessions loaded from the store into memory",
            m.store_loads.clone(),
        );
        registry.register(
            "requests_forwarded",
            "Requests for a session another process serves, forwarded to it (Postgres)",
            m.requests_forwarded.clone(),
        );
        registry.register(
            "leases_taken_over",
            "Sessions this process took over from another one (dead, paused past its lease, or that handed them back)",
            m.leases_taken_over.clone(),
        );
        registry.register(
            "turns_joined",
            "Turns run for several writers that asked to join (onBusy: join)",
            m.turns_joined.clone(),
        );
        registry.register(
            "joined_writers",
            "Writers per joined turn",
            m.joined_writers.clone(),
        );
        registry.register(
            "feed_followers",
            "Clients following a session's live feed (GET /text/session/{id}/events)",
            m.feed_followers.clone(),
        );
        registry.register(
            "feed_resyncs",
            "Feed followers sent session.resync: too far behind, or resuming from a version the feed no longer holds",
            m.feed_resyncs.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a turn run for several joining writers.
    pub fn turn_joined(&self, writers: usize) {
        self.turns_joined.inc();
        self.joined_writers.observe(writers as f64);
    }

    /// Counts a failed store call: `unavailable`, `version_moved`, `fenced` (a commit
    /// of a process that lost the session's lease) or `refused`.
    pub fn store_error(&self, kind: &'static str) {
        self.store_errors
            .get_or_create(&StoreErrorLabel { kind })
            .inc();
    }

    /// The metrics in the text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a turn that ended.
    pub fn turn_ended(&self, outcome: &'static str) {
        self.turns.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The series of `provider` that every call moves.
    pub fn provider(&self, provider: &str) -> Arc<ProviderMetrics> {
        let known = self
            .providers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = known.iter().find(|p| p.name == provider) {
            return found.clone();
        }
        drop(known);
        let mut known = self
            .providers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = known.iter().find(|p| p.name == provider) {
            return found.clone();
        }
        let tokens = |direction| {
            self.tokens
                .get_or_create(&TokenLabels {
                    provider: provider.to_owned(),
                    direction,
                })
                .clone()
        };
        let series = Arc::new(ProviderMetrics {
            name: provider.to_owned(),
            duration: self
                .provider_duration
                .get_or_create(&ProviderLabel {
                    provider: provider.to_owned(),
                })
                .clone(),
            input_tokens: tokens("input"),
            output_tokens: tokens("output"),
        });
        known.push(series.clone());
        series
    }

    /// Counts a failed provider call.
    pub fn provider_error(&self, provider: &str, kind: &'static str) {
        self.provider_errors
            .get_or_create(&ProviderErrorLabels {
                provider: provider.to_owned(),
                kind,
            })
            .inc();
    }

    /// Counts a retried provider call.
    pub fn provider_retry(&self, provider: &str) {
        self.provider_retries
            .get_or_create(&ProviderLabel {
                provider: provider.to_owned(),
            })
            .inc();
    }
}
