//! Typed configuration: command-line flags with environment fallbacks (a `.env` file is
//! read by `main` first), checked once at start. `.env.example` lists every setting.
//! Nothing here builds anything: the providers are built from it by
//! `provider::registry`, the state by `app`. Secrets are `secret::Secret`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

pub use crate::secret::Secret;

/// Default base URL of the `openai` provider.
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Default base URL of the `anthropic` provider.
pub const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// Every setting of the service.
#[derive(Debug, Clone, Parser)]
#[command(name = "text-session-api", version, about)]
pub struct Config {
    /// Where sessions are kept: `sqlite://PATH` (one embedded file, created with its
    /// folder), `postgres://…` (an existing database) or `memory` (nothing outlives the
    /// process).
    #[arg(long, env = "STORE", default_value = "sqlite://./data/sessions.db")]
    pub store: String,

    /// With a durable store, sessions kept in memory at most; past it the least recently
    /// used idle ones leave memory and load again on their next use.
    #[arg(long, env = "MAX_LIVE_SESSIONS", default_value_t = 10000)]
    pub max_live_sessions: usize,

    /// Where the other processes on the same Postgres reach this one (`host:port`), to
    /// forward it the requests for the sessions it serves; required with several
    /// processes. Without it a process takes it that it is alone on its database.
    #[arg(long, env = "INSTANCE_ADDR")]
    pub instance_addr: Option<String>,

    /// Seconds a process's lease on a session lasts without renewal (renewed every third
    /// of it while the session is live there): how soon the sessions of a process that
    /// died are served by another.
    #[arg(long, env = "LEASE_SECS", default_value_t = 10.0, value_parser = positive_secs)]
    pub lease_secs: f64,

    /// Address to listen on.
    #[arg(long = "bind", env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Provider of sessions that name none.
    #[arg(long, env = "DEFAULT_PROVIDER", default_value = "echo")]
    pub default_provider: String,

    /// Model of sessions that name none (on the default provider); else the provider's own default.
    #[arg(long, env = "DEFAULT_MODEL")]
    pub default_model: Option<String>,

    /// Key for the `openai` provider; it is configured when this or its base URL is set.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<Secret>,

    /// Base URL of the `openai` provider.
    #[arg(long, env = "OPENAI_BASE_URL", default_value = OPENAI_DEFAULT_BASE_URL)]
    pub openai_base_url: String,

    /// Default model of the `openai` provider.
    #[arg(long, env = "OPENAI_DEFAULT_MODEL", default_value = "gpt-4o-mini")]
    pub openai_default_model: String,

    /// Key for the `anthropic` provider; it is configured when this or its base URL is set.
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true)]
    pub anthropic_api_key: Option<Secret>,

    /// Base URL of the `anthropic` provider.
    #[arg(long, env = "ANTHROPIC_BASE_URL", default_value = ANTHROPIC_DEFAULT_BASE_URL)]
    pub anthropic_base_url: String,

    /// Default model of the `anthropic` provider.
    #[arg(
        long,
        env = "ANTHROPIC_DEFAULT_MODEL",
        default_value = "claude-sonnet-4-5"
    )]
    pub anthropic_default_model: String,

    /// More OpenAI-compatible endpoints, `name=base_url` separated by commas, e.g.
    /// `ollama=http://localhost:11434/v1`. Each takes `<NAME>_API_KEY` and
    /// `<NAME>_DEFAULT_MODEL` from the environment if set.
    #[arg(long, env = "OPENAI_COMPATIBLE", default_value = "")]
    pub openai_compatible: NamedEndpoints,

    /// Writers that may wait for one session's turn lock; one more gets 429.
    #[arg(long, env = "MAX_WAITING_PER_SESSION", default_value_t = 64)]
    pub max_waiting_per_session: usize,

    /// Pause before each word the echo provider streams, in milliseconds.
    #[arg(long, env = "ECHO_STREAM_DELAY_MS", default_value_t = 0)]
    pub echo_stream_delay_ms: u64,

    /// Ended turns of any status each session remembers (`GET …/turns`).
    #[arg(long, env = "TURNS_KEEP", default_value_t = 100)]
    pub turns_keep: usize,

    /// Failed turns each session remembers besides those (the dead-letter view).
    #[arg(long, env = "FAILED_TURNS_KEEP", default_value_t = 50)]
    pub failed_turns_keep: usize,

    /// Seconds an ended turn is remembered at most.
    #[arg(long, env = "TURNS_MAX_AGE_SECS", default_value_t = 86400)]
    pub turns_max_age_secs: u64,

    /// Turns per session whose events stay replayable after they end.
    #[arg(long, env = "TURN_EVENTS_KEEP", default_value_t = 16)]
    pub turn_events_keep: usize,

    /// Seconds an ended turn's events stay replayable (while among the last kept).
    #[arg(long, env = "TURN_EVENTS_TTL_SECS", default_value_t = 600)]
    pub turn_events_ttl_secs: u64,

    /// Items (turn events and commits) a session's live feed keeps for followers to
    /// resume from; one that falls further behind is sent `session.resync`.
    #[arg(long, env = "FEED_EVENTS", default_value_t = 1000)]
    pub feed_events: usize,

    /// Bytes of turn events (text, tool calls) a session's live feed keeps.
    #[arg(long, env = "FEED_BYTES", default_value_t = 1024 * 1024)]
    pub feed_bytes: usize,

    /// Seconds an events token (`POST /text/session/{id}/events/token`) is accepted
    /// for opening a stream.
    #[arg(long, env = "EVENTS_TOKEN_TTL_SECS", default_value_t = 600)]
    pub events_token_ttl_secs: u64,

    /// Provider calls in flight across all sessions; past it turns wait for a slot.
    #[arg(long, env = "MAX_CONCURRENT_TURNS", default_value_t = 1024)]
    pub max_concurrent_turns: usize,

    /// Turns that may wait for a provider slot; past it new writes get 503 overloaded.
    #[arg(long, env = "MAX_WAITING_TURNS", default_value_t = 4096)]
    pub max_waiting_turns: usize,

    /// Retries of a provider call that failed with 429, 5xx or a broken connection.
    #[arg(long, env = "PROVIDER_MAX_RETRIES", default_value_t = 2)]
    pub provider_max_retries: u32,

    /// Backoff before the first retry, in milliseconds (doubled each time, full jitter).
    #[arg(long, env = "PROVIDER_RETRY_BASE_MS", default_value_t = 500)]
    pub provider_retry_base_ms: u64,

    /// Longest backoff between retries, in milliseconds.
    #[arg(long, env = "PROVIDER_RETRY_MAX_MS", default_value_t = 8000)]
    pub provider_retry_max_ms: u64,

    /// Seconds running turns get to finish after SIGTERM/SIGINT; the rest are rolled back.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30.0, value_parser = non_negative_secs)]
    pub shutdown_grace_secs: f64,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Log message content (user messages, replies); off by default.
    #[arg(long, env = "LOG_CONTENT", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_content: bool,

    /// API keys, comma-separated; when set (here or in API_KEYS_FILE) every route but
    /// /healthz, /readyz, /openapi.json, /docs and the playground needs
    /// `Authorization: Bearer <key>`.
    #[arg(long, env = "API_KEYS", hide_env_values = true, value_delimiter = ',')]
    pub api_keys: Vec<Secret>,

    /// A file with one API key per line (blank lines and `#` comments skipped).
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// Seconds an Idempotency-Key and its stored answer are kept.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = 86400)]
    pub idempotency_ttl_secs: u64,

    /// Idempotency keys kept per API key (its oldest go first; other keys' are untouched).
    #[arg(long, env = "IDEMPOTENCY_MAX_KEYS", default_value_t = 10000)]
    pub idempotency_max_keys: usize,

    /// Bytes of stored answers kept per API key (its oldest go first).
    #[arg(long, env = "IDEMPOTENCY_MAX_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub idempotency_max_bytes: usize,

    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most characters in one message (content, instruction, tool output).
    #[arg(long, env = "MAX_MESSAGE_CHARS", default_value_t = 100_000)]
    pub max_message_chars: usize,

    /// Most messages in one session's history; a write past it gets 409 session_full.
    #[arg(long, env = "MAX_MESSAGES_PER_SESSION", default_value_t = 10_000)]
    pub max_messages_per_session: usize,

    /// Most tools one session may have.
    #[arg(long, env = "MAX_TOOLS_PER_SESSION", default_value_t = 128)]
    pub max_tools_per_session: usize,

    /// Most bytes a session's metadata may take as JSON.
    #[arg(long, env = "MAX_METADATA_BYTES", default_value_t = 16 * 1024)]
    pub max_metadata_bytes: usize,

    /// Most sessions in all; one more gets 429 session_limit.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 100_000)]
    pub max_sessions: usize,

    /// Most sessions per API key; one more gets 429 session_limit.
    #[arg(long, env = "MAX_SESSIONS_PER_KEY", default_value_t = 10_000)]
    pub max_sessions_per_key: usize,

    /// Seconds after which an idle session (no read, no write, no running turn) expires.
    #[arg(long, env = "SESSION_TTL_SECS", default_value_t = 86400.0, value_parser = positive_secs)]
    pub session_ttl_secs: f64,

    /// Origins allowed to call from a browser, comma-separated, or `*`; none by default.
    #[arg(long, env = "CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,

    /// Bound on one provider call, in seconds (fractions allowed).
    #[arg(long, env = "PROVIDER_TIMEOUT_SECS", default_value_t = 120.0, value_parser = positive_secs)]
    pub provider_timeout_secs: f64,

    /// Bytes the service may hold for its clients (histories, turn records, turn events,
    /// stored answers); past it new writes get 503. 0: half the machine's memory.
    #[arg(long, env = "MEMORY_BUDGET_BYTES", default_value_t = 0)]
    pub memory_budget_bytes: usize,

    /// Bytes one API key may hold of that budget; past it its writes get 429. 0: half
    /// the budget when API keys are configured, all of it when they are not.
    #[arg(long, env = "MEMORY_PER_KEY_BYTES", default_value_t = 0)]
    pub memory_per_key_bytes: usize,

    /// Bytes of histories kept already written as JSON, so that full answers, reads of a
    /// session, replays and the providers' requests copy them instead of
    /// writing them anew; beside the memory budget, and at most an eighth of
    /// it (a history that does not fit is written on each answer, nothing is refused).
    /// 0: none kept.
    #[arg(long, env = "HISTORY_CACHE_BYTES", default_value_t = 64 << 20)]
    pub history_cache_bytes: usize,

    /// Connections open at once; at the bound the oldest idle one is closed to make
    /// room. 0: half the file-descriptor limit (raised to its hard limit at start).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Seconds for a request head to arrive, from when a connection opens or goes idle
    /// (so also the keep-alive timeout); then the connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 15.0, value_parser = positive_secs)]
    pub header_read_timeout_secs: f64,

    /// Seconds for a request body to arrive once its head has; then `408 request_timeout`.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = 30.0, value_parser = positive_secs)]
    pub body_read_timeout_secs: f64,

    /// Seconds a write may wait for the client to read; then the connection is closed.
    #[arg(long, env = "WRITE_TIMEOUT_SECS", default_value_t = 60.0, value_parser = positive_secs)]
    pub write_timeout_secs: f64,

    /// Bytes read at most for one provider answer, a body or a stream; past it the turn
    /// fails (502) with nothing appended.
    #[arg(long, env = "MAX_REPLY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_reply_bytes: usize,

    /// Tool calls one provider reply may make; past it the turn fails (502).
    #[arg(long, env = "MAX_TOOL_CALLS_PER_REPLY", default_value_t = 256)]
    pub max_tool_calls_per_reply: usize,
}

/// A configuration error found at start.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl Config {
    /// The defaults, as `cargo run` with no flags and no environment would have them.
    pub fn defaults() -> Self {
        Self::parse_from(["text-session-api"])
    }

    /// Every API key, from API_KEYS and API_KEYS_FILE; empty values are skipped.
    pub fn api_keys(&self) -> Result<Vec<Secret>, ConfigError> {
        let mut keys: Vec<Secret> = self.api_keys.clone();
        if let Some(path) = &self.api_keys_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("API_KEYS_FILE {}: {e}", path.display())))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(Secret::new),
            );
        }
        keys.retain(|key| !key.expose().trim().is_empty());
        Ok(keys)
    }

    /// `INSTANCE_ADDR`, checked (a `host:port`, and only with Postgres); empty when unset.
    pub fn instance_addr(&self) -> Result<String, ConfigError> {
        let addr = self.instance_addr.as_deref().map(str::trim).unwrap_or("");
        if !addr.is_empty() {
            if !(self.store.starts_with("postgres://") || self.store.starts_with("postgresql://")) {
                return Err(ConfigError::new(
                    "INSTANCE_ADDR: several processes share sessions only on Postgres (STORE=postgres://…)",
                ));
            }
            if addr.contains('/')
                || addr
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(ConfigError::new(format!(
                    "INSTANCE_ADDR: `{addr}` is not a host:port"
                )));
            }
        }
        Ok(addr.to_owned())
    }

    /// `LEASE_SECS` as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.lease_secs)
    }

    /// The grace period of shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs)
    }

    /// The provider timeout as a duration.
    pub fn provider_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.provider_timeout_secs)
    }
}

fn non_negative_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(secs),
        _ => Err(format!("`{text}` is not a number of seconds")),
    }
}

fn positive_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(secs),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}

/// A named OpenAI-compatible endpoint: `name=base_url`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedEndpoint {
    pub name: String,
    pub base_url: String,
}

impl FromStr for NamedEndpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, base_url) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not of the form name=base_url"))?;
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(format!(
                "provider name `{name}` must be lowercase letters, digits, `-` or `_`"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            base_url: base_url.trim().to_owned(),
        })
    }
}

/// Named endpoints, `name=base_url` separated by commas; empty entries are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamedEndpoints(pub Vec<NamedEndpoint>);

impl FromStr for NamedEndpoints {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .filter(|item| !item.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_the_configuration_never_prints_itself() {
        let config = Config::parse_from(["x", "--openai-api-key", "sk-very-secret"]);
        assert!(!format!("{config:?}").contains("sk-very-secret"));
    }

    #[test]
    fn named_endpoints_parse_and_reject_bad_names() {
        let endpoint: NamedEndpoint = "ollama=http://localhost:11434/v1".parse().unwrap();
        assert_eq!(endpoint.name, "ollama");
        assert_eq!(endpoint.base_url, "http://localhost:11434/v1");
        assert!("Ollama=http://x".parse::<NamedEndpoint>().is_err());
        assert!("no-equals-sign".parse::<NamedEndpoint>().is_err());
        let list: NamedEndpoints = "a=http://x, ,b=http://y".parse().unwrap();
        assert_eq!(list.0.len(), 2);
        assert_eq!(
            "".parse::<NamedEndpoints>().unwrap(),
            NamedEndpoints::default()
        );
    }

    #[test]
    fn env_example_lists_every_setting_one_to_one() {
        use clap::CommandFactory;
        let example = include_str!("../.env.example");
        let mut listed: Vec<&str> = example
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('=').map(|(key, _)| key.trim()))
            .filter(|key| !key.is_empty())
            .collect();
        let mut known: Vec<String> = Config::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
            .collect();
        known.push("RUST_LOG".to_owned());
        listed.sort_unstable();
        known.sort_unstable();
        assert_eq!(listed, known);
    }
}
