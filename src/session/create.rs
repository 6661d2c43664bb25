//! Creating a session: checking what a client asks for (provider, model, defaults,
//! tools, metadata, instructions) before anything is created, and the checks the writes
//! share (instructions, message length). Each failure names the field at fault.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::feed::Feed;
use super::kept::KeptJson;
use super::records::TurnRecords;
use super::settings::Settings;
use super::{EncodedHistory, History, Session, TurnLock};
use crate::keys::KeyId;
use crate::memory::Account;
use crate::message::{Defaults, ForkedFrom, Message, Role, Timestamp, Tool};
use crate::provider::{Provider, ProviderRegistry};
use crate::store::{SessionRow, StoredSession};

/// Most stop sequences (OpenAI's own bound).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// Most characters in a name or an id a client gives: a model, a tool output's `callId`.
pub const MAX_ID_CHARS: usize = 256;

/// A name or an id: not blank, at most `MAX_ID_CHARS` characters.
pub fn check_id(field: &str, id: &str) -> Result<(), Invalid> {
    if id.trim().is_empty() {
        return Err(Invalid::new(field, "must not be blank"));
    }
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(Invalid::new(
            field,
            format!("at most {MAX_ID_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}

/// Input that breaks a rule; `field` is the JSON path of the culprit, e.g. `tools[1].name`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a client asks for when it creates a session; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub instructions: Option<Vec<String>>,
    pub defaults: Defaults,
    pub tools: Vec<Tool>,
    pub metadata: Map<String, Value>,
}

impl NewSession {
    /// Checks every field and builds the session, its instructions as the first
    /// system messages.
    pub fn build(
        self,
        providers: &ProviderRegistry,
        settings: Settings,
        owner: Option<KeyId>,
        account: Account,
    ) -> Result<Session, Invalid> {
        let limits = settings.limits;
        let provider_name = self
            .provider
            .unwrap_or_else(|| providers.default_name().to_owned());
        let provider = providers
            .get(&provider_name)
            .map_err(|e| Invalid::new("provider", e.to_string()))?
            .clone();
        let model = match self.model {
            Some(model) => {
                check_id("model", &model)?;
                model
            }
            None => providers
                .default_model(&provider_name)
                .ok_or_else(|| {
                    Invalid::new(
                        "model",
                        format!("provider `{provider_name}` has no default model; name one"),
                    )
                })?
                .to_owned(),
        };
        check_defaults(&self.defaults)?;
        check_tools(&self.tools, limits.tools)?;
        check_metadata(&self.metadata, limits.metadata_bytes)?;
        let now = Timestamp::now();
        let messages = match self.instructions {
            Some(list) => {
                validate_instructions("instructions", &list, limits.message_chars)?;
                list.into_iter()
                    .map(|text| Message::text(Role::System, text, now))
                    .collect()
            }
            None => Vec::new(),
        };
        if messages.len() > limits.messages {
            return Err(Invalid::new(
                "instructions",
                format!(
                    "at most {} messages (MAX_MESSAGES_PER_SESSION), got {}",
                    limits.messages,
                    messages.len()
                ),
            ));
        }
        let row = SessionRow {
            id: Uuid::new_v4(),
            owner: owner.map(|key| key.to_hex()),
            provider: provider_name,
            model,
            defaults: self.defaults,
            tools: self.tools,
            metadata: self.metadata,
            created_at: now,
            updated_at: now,
            version: 1,
            forked_from: None,
        };
        Ok(Session::from_row(
            row, provider, owner, messages, settings, account,
        ))
    }
}

impl Session {
    /// A session as the store kept it, live again: its settings and whole history,
    /// under the limits and retention in force now. Fails when its provider is no longer
    /// configured.
    pub fn restore(
        stored: StoredSession,
        providers: &ProviderRegistry,
        settings: Settings,
        account: Account,
    ) -> Result<Session, String> {
        let StoredSession {
            row,
            messages,
            turns,
        } = stored;
        let provider = providers
            .get(&row.provider)
            .map_err(|e| format!("session {}: {e}", row.id))?
            .clone();
        let owner = match &row.owner {
            Some(hex) => Some(
                KeyId::from_hex(hex).ok_or_else(|| format!("session {}: owner `{hex}`", row.id))?,
            ),
            None => None,
        };
        let session = Session::from_row(row, provider, owner, messages, settings, account);
        session.turns().restore(&turns);
        Ok(session)
    }

    /// A live session from its stored form: the one way both a new session and a
    /// restored one are put together.
    fn from_row(
        row: SessionRow,
        provider: Arc<Provider>,
        owner: Option<KeyId>,
        messages: Vec<Message>,
        settings: Settings,
        account: Account,
    ) -> Session {
        // What the provider is sent is kept only where the whole history is sent: a
        // session whose context window leaves messages out would keep what it never
        // sends.
        let kept_sent = provider.keeps_messages() && !super::context::is_bounded(&row.defaults);
        let sent = KeptJson::new(account.caches().filter(|_| kept_sent));
        Session {
            id: row.id,
            provider_name: row.provider,
            provider,
            model: row.model,
            defaults: row.defaults,
            tools: row.tools,
            metadata: row.metadata,
            created_at: row.created_at,
            forked_from: row.forked_from,
            limits: settings.limits,
            owner,
            last_active: Mutex::new(Instant::now()),
            history: RwLock::new(History {
                held: account.charge(messages.iter().map(Message::size_estimate).sum()),
                messages,
                updated_at: row.updated_at,
                version: row.version,
                encoded: Mutex::new(EncodedHistory::new(account.caches())),
                sent: Mutex::new(sent),
            }),
            turn_lock: TurnLock::new(settings.max_waiting_per_session),
            turns: TurnRecords::new(settings.turns, account.clone()),
            feed: Arc::new(Feed::new(row.version, settings.feed, &account)),
            account,
            stale: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }
}

/// A fork asked for more messages than the session holds (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upTo: the session holds {len} messages; got {up_to}")]
pub struct HistoryTooShort {
    pub len: usize,
    pub up_to: usize,
}

impl Session {
    /// A new session with this one's settings, owner and provider, whose history is the
    /// first `up_to` committed messages of this one (all when `None`). This one is left
    /// as it is. The store shares the messages rather than copying them.
    pub fn fork(
        &self,
        up_to: Option<usize>,
        settings: Settings,
        account: Account,
    ) -> Result<Session, HistoryTooShort> {
        let (messages, version) = self.read(|history| {
            let len = history.messages.len();
            let n = up_to.unwrap_or(len);
            if n > len {
                return Err(HistoryTooShort { len, up_to: n });
            }
            Ok((history.messages[..n].to_vec(), history.version))
        })?;
        let now = Timestamp::now();
        let row = SessionRow {
            id: Uuid::new_v4(),
            owner: self.owner.map(|key| key.to_hex()),
            provider: self.provider_name.clone(),
            model: self.model.clone(),
            defaults: self.defaults.clone(),
            tools: self.tools.clone(),
            metadata: self.metadata.clone(),
            created_at: now,
            updated_at: now,
            version: 1,
            forked_from: Some(ForkedFrom {
                session_id: self.id,
                version,
                up_to: messages.len(),
            }),
        };
        Ok(Session::from_row(
            row,
            self.provider.clone(),
            self.owner,
            messages,
            settings,
            account,
        ))
    }
}

/// Instructions must be a non-empty list of non-blank texts of at most `max_chars`.
pub fn validate_instructions<T: AsRef<str>>(
    field: &str,
    list: &[T],
    max_chars: usize,
) -> Result<(), Invalid> {
    if list.is_empty() {
        return Err(Invalid::new(field, "must not be an empty list"));
    }
    for (i, text) in list.iter().enumerate() {
        let text = text.as_ref();
        if text.trim().is_empty() {
            return Err(Invalid::new(format!("{field}[{i}]"), "must not be blank"));
        }
        check_length(&format!("{field}[{i}]"), text, max_chars)?;
    }
    Ok(())
}

/// A message's text must have at most `max_chars` characters.
pub fn check_length(field: &str, text: &str, max_chars: usize) -> Result<(), Invalid> {
    // Counting stops early: a huge text costs no more than the limit.
    if text.chars().nth(max_chars).is_some() {
        return Err(Invalid::new(
            field,
            format!("must have at most {max_chars} characters"),
        ));
    }
    Ok(())
}

fn check_defaults(defaults: &Defaults) -> Result<(), Invalid> {
    if let Some(t) = defaults.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(Invalid::new(
            "defaults.temperature",
            "must be between 0 and 2",
        ));
    }
    if let Some(p) = defaults.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(Invalid::new(
            "defaults.topP",
            "must be greater than 0 and at most 1",
        ));
    }
    let in_range = |field: &str, value: Option<u32>, max: u32| match value {
        Some(v) if v == 0 || v > max => Err(Invalid::new(
            format!("defaults.{field}"),
            format!("must be between 1 and {max}"),
        )),
        _ => Ok(()),
    };
    in_range("maxTokens", defaults.max_tokens, 1_000_000)?;
    in_range(
        "maxContextMessages",
        defaults.max_context_messages,
        1_000_000,
    )?;
    in_range("maxContextTokens", defaults.max_context_tokens, 100_000_000)?;
    if let Some(stop) = &defaults.stop {
        if stop.len() > MAX_STOP_SEQUENCES {
            return Err(Invalid::new(
                "defaults.stop",
                format!("at most {MAX_STOP_SEQUENCES} stop sequences"),
            ));
        }
        if let Some(i) = stop.iter().position(String::is_empty) {
            return Err(Invalid::new(
                format!("defaults.stop[{i}]"),
                "must not be empty",
            ));
        }
    }
    Ok(())
}

fn check_tools(tools: &[Tool], max: usize) -> Result<(), Invalid> {
    if tools.len() > max {
        return Err(Invalid::new("tools", format!("at most {max} tools")));
    }
    let mut names = HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let valid_name = (1..=64).contains(&tool.name.len())
            && tool
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(Invalid::new(
                format!("tools[{i}].name"),
                "must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -",
            ));
        }
        if !names.insert(tool.name.as_str()) {
            return Err(Invalid::new(
                format!("tools[{i}].name"),
                format!("`{}` is used by another tool", tool.name),
            ));
        }
        if !tool.parameters.is_object() {
            return Err(Invalid::new(
                format!("tools[{i}].parameters"),
                "must be a JSON Schema object",
            ));
        }
    }
    Ok(())
}

fn check_metadata(metadata: &Map<String, Value>, max: usize) -> Result<(), Invalid> {
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |bytes| bytes.len());
    if size > max {
        return Err(Invalid::new(
            "metadata",
            format!("must take at most {max} bytes as JSON, got {size}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Provider, echo::Echo};
    use crate::session::Limits;
    use crate::session::records::Retention;

    fn unbounded() -> Account {
        crate::memory::MemoryBudget::unbounded().account(None)
    }

    fn registry() -> ProviderRegistry {
        ProviderRegistry::new(
            [("echo".to_owned(), Provider::Echo(Echo::default()))],
            "echo",
            None,
        )
        .unwrap()
    }

    const SETTINGS: Settings = Settings {
        max_waiting_per_session: 4,
        limits: Limits {
            message_chars: 100,
            messages: 100,
            tools: 128,
            metadata_bytes: 16 * 1024,
        },
        turns: Retention {
            records: 4,
            failed: 4,
            max_age: std::time::Duration::from_secs(60),
            events: 4,
            events_ttl: std::time::Duration::from_secs(60),
        },
        feed: crate::session::feed::FeedLimits {
            events: 16,
            bytes: 1 << 16,
        },
    };

    fn tool(name: &str) -> Tool {
        Tool {
            kind: Default::default(),
            name: name.into(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
        }
    }

    #[test]
    fn an_empty_request_gets_every_default() {
        let session = NewSession::default()
            .build(&registry(), SETTINGS, None, unbounded())
            .unwrap();
        assert_eq!(session.provider_name, "echo");
        assert_eq!(session.model, "echo-1");
        assert_eq!(session.read(|h| h.messages.len()), 0);
    }

    #[test]
    fn instructions_become_the_first_system_messages() {
        let new = NewSession {
            instructions: Some(vec!["be brief".into(), "be kind".into()]),
            ..Default::default()
        };
        let session = new.build(&registry(), SETTINGS, None, unbounded()).unwrap();
        let roles: Vec<_> = session.read(|h| h.messages.iter().map(|m| m.role).collect());
        assert_eq!(roles, [Role::System, Role::System]);
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (
                NewSession {
                    provider: Some("nope".into()),
                    ..Default::default()
                },
                "provider",
            ),
            (
                NewSession {
                    model: Some(" ".into()),
                    ..Default::default()
                },
                "model",
            ),
            (
                NewSession {
                    instructions: Some(vec![]),
                    ..Default::default()
                },
                "instructions",
            ),
            (
                NewSession {
                    instructions: Some(vec!["a".into(), " ".into()]),
                    ..Default::default()
                },
                "instructions[1]",
            ),
            (
                NewSession {
                    defaults: Defaults {
                        temperature: Some(3.0),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "defaults.temperature",
            ),
            (
                NewSession {
                    tools: vec![tool("ok"), tool("ok")],
                    ..Default::default()
                },
                "tools[1].name",
            ),
            (
                NewSession {
                    tools: vec![tool("bad name")],
                    ..Default::default()
                },
                "tools[0].name",
            ),
        ];
        for (new, field) in cases {
            assert_eq!(
                new.build(&registry(), SETTINGS, None, unbounded())
                    .unwrap_err()
                    .field,
                field
            );
        }
    }

    #[test]
    fn metadata_over_the_bound_is_refused() {
        let mut metadata = Map::new();
        metadata.insert("blob".into(), Value::String("x".repeat(16 * 1024)));
        let new = NewSession {
            metadata,
            ..Default::default()
        };
        assert_eq!(
            new.build(&registry(), SETTINGS, None, unbounded())
                .unwrap_err()
                .field,
            "metadata"
        );
    }
}
