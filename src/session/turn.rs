//! One write, a *turn*: take the session's turn lock, stage the write's messages, call
//! the provider with the whole history, then commit everything as one step — or, if
//! anything fails or the turn is cancelled, commit nothing.
//!
//! A turn runs in a task of its own, so it belongs to the session and not to the HTTP
//! connection: a client that goes away does not cut a turn in half. Everything it does
//! is also appended to its event log (`events.rs`), which streaming clients follow.
//! A cancel stops the provider call at once (its future, and so its HTTP request, is
//! dropped) and keeps or rolls back as asked. How the outcome is shaped into a
//! response is the routes' business.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use utoipa::ToSchema;
use uuid::Uuid;

use super::events::TurnEvent;
use super::turn_lock::{CancelMode, Ticket};
use super::turns::TurnRecord;
use super::{Commit, LockError, Message, OnBusy, Priority, Role, Session, ToolCall};
use crate::provider::{ChatRequest, FinishReason, ProviderError, StreamEvent, Usage};
use crate::timestamp::Timestamp;

/// Which write started the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TurnKind {
    /// A user message (and optional instructions), then a generation.
    Message,
    /// Instructions, then a generation.
    Instructions,
    /// Tool outputs; no generation.
    ToolOutput,
}

/// A write, checked and ready to run.
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub kind: TurnKind,
    /// What the write appends before any reply, in order. Timestamps are set when the
    /// turn takes the lock.
    pub staged: Vec<Message>,
    pub priority: Priority,
    pub on_busy: OnBusy,
    /// Call the provider in its streaming mode.
    pub stream: bool,
    /// The request body as received, for the turn's record.
    pub body: serde_json::Value,
}

/// What one generation returned.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Result, example = json!({"text": "echo: hello", "toolCalls": [], "finishReason": "stop", "usage": {"inputTokens": 1, "outputTokens": 2}, "provider": "echo", "model": "echo-1"}))]
pub struct TurnResult {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub provider: String,
    pub model: String,
}

/// A committed turn.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    pub turn_id: Uuid,
    /// The generation's result; `None` for tool outputs.
    pub result: Option<TurnResult>,
    /// Where the commit left the history.
    pub commit: Commit,
}

/// Why a turn did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TurnError {
    /// The turn never got the lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The provider failed; the history is as it was.
    #[error("provider `{provider}`: {error}")]
    Provider {
        provider: String,
        error: ProviderError,
    },
    /// The turn was cancelled while it ran. With `keep`, its messages and the partial
    /// reply were committed (`commit`); with `rollback`, nothing was.
    #[error("the turn was cancelled")]
    Cancelled {
        /// The reply text that had arrived.
        partial: String,
        commit: Option<Commit>,
    },
    /// The turn's task died (a bug); the history is as it was.
    #[error("the turn failed unexpectedly: {0}")]
    Internal(String),
}

/// A started turn; its outcome can be awaited, its events followed, or both left alone.
#[derive(Debug)]
pub struct Turn {
    pub id: Uuid,
    pub record: Arc<TurnRecord>,
    task: JoinHandle<Result<TurnOutcome, TurnError>>,
}

impl Turn {
    /// Waits for the turn to end.
    pub async fn outcome(self) -> Result<TurnOutcome, TurnError> {
        self.task
            .await
            .unwrap_or_else(|e| Err(TurnError::Internal(e.to_string())))
    }
}

/// Starts a turn: asks for the turn lock at once (so a busy or overloaded session is
/// refused before anything runs), records the turn, then runs the rest in a task of its
/// own.
/// A write turned away is still recorded (as `rejected`) and named by `turn_id`.
pub fn start(session: Arc<Session>, input: TurnInput) -> Result<Turn, Rejected> {
    let id = Uuid::new_v4();
    let ticket = match session.lock().enter(id, input.priority, input.on_busy) {
        Ok(ticket) => ticket,
        Err(error) => {
            session.turns().reject(id, input, error.into());
            return Err(Rejected {
                turn_id: id,
                error: error.into(),
            });
        }
    };
    let record = session.turns().start(id, input.clone());
    if let Some(position) = ticket.position() {
        record.push(TurnEvent::Queued { position });
    }
    let task = tokio::spawn(run(session, record.clone(), ticket, input));
    Ok(Turn { id, record, task })
}

/// A write turned away before it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The turn id the write was recorded under.
    pub turn_id: Uuid,
    pub error: TurnError,
}

/// Runs the turn and ends its event log, whatever way it ends (a panic included).
async fn run(
    session: Arc<Session>,
    record: Arc<TurnRecord>,
    ticket: Ticket,
    input: TurnInput,
) -> Result<TurnOutcome, TurnError> {
    let outcome = AssertUnwindSafe(execute(&session, &record, ticket, input))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            Err(TurnError::Internal(format!("the turn panicked: {detail}")))
        });
    record.push(match &outcome {
        Ok(outcome) => TurnEvent::Completed {
            result: outcome.result.clone(),
            commit: outcome.commit,
        },
        Err(TurnError::Cancelled { partial, commit }) => TurnEvent::Cancelled {
            result: cancelled_result(&session, partial.clone()),
            commit: *commit,
        },
        Err(TurnError::Lock(LockError::Cancelled)) => TurnEvent::Cancelled {
            result: cancelled_result(&session, String::new()),
            commit: None,
        },
        Err(error) => TurnEvent::Failed(error.clone()),
    });
    outcome
}

async fn execute(
    session: &Session,
    record: &TurnRecord,
    ticket: Ticket,
    input: TurnInput,
) -> Result<TurnOutcome, TurnError> {
    let guard = ticket.acquire().await?;
    record.push(TurnEvent::Started);
    let mut messages = stamp(input.staged);
    #[cfg(feature = "fault-injection")]
    fault_injection::panic_if_asked(&messages);
    let turn_id = guard.turn_id();
    if input.kind == TurnKind::ToolOutput {
        let commit = session.commit(messages);
        return Ok(TurnOutcome {
            turn_id,
            result: None,
            commit,
        });
    }
    let generated = tokio::select! {
        biased;
        mode = guard.cancelled() => Err(mode),
        result = generate(session, &messages, record, input.stream) => Ok(result?),
    };
    match generated {
        Ok(result) => {
            messages.push(assistant(
                result.text.clone(),
                result.tool_calls.clone(),
                false,
            ));
            let commit = session.commit(messages);
            Ok(TurnOutcome {
                turn_id,
                result: Some(result),
                commit,
            })
        }
        Err(CancelMode::Rollback) => Err(TurnError::Cancelled {
            partial: record.events.text_so_far(),
            commit: None,
        }),
        Err(CancelMode::Keep) => {
            let partial = record.events.text_so_far();
            messages.push(assistant(partial.clone(), Vec::new(), true));
            let commit = session.commit(messages);
            Err(TurnError::Cancelled {
                partial,
                commit: Some(commit),
            })
        }
    }
}

fn assistant(text: String, tool_calls: Vec<ToolCall>, interrupted: bool) -> Message {
    Message {
        role: Role::Assistant,
        content: text,
        tool_calls,
        tool_call_id: None,
        interrupted,
        created_at: Timestamp::now(),
    }
}

fn cancelled_result(session: &Session, text: String) -> TurnResult {
    TurnResult {
        text,
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Cancelled,
        usage: Usage::default(),
        provider: session.provider_name.clone(),
        model: session.model.clone(),
    }
}

/// The time the turn took the lock is the time its messages enter the history.
fn stamp(mut staged: Vec<Message>) -> Vec<Message> {
    let now = Timestamp::now();
    for message in &mut staged {
        message.created_at = now;
    }
    staged
}

/// Calls the provider with the committed history plus the staged messages; every piece
/// of the reply goes to the turn's events as it arrives.
async fn generate(
    session: &Session,
    staged: &[Message],
    record: &TurnRecord,
    stream: bool,
) -> Result<TurnResult, TurnError> {
    let provider_error = |error| TurnError::Provider {
        provider: session.provider_name.clone(),
        error,
    };
    let call = session
        .read(|history| {
            session.provider.prepare(&ChatRequest {
                model: &session.model,
                history: &history.messages,
                staged,
                tools: &session.tools,
                params: &session.defaults,
                stream,
            })
        })
        .map_err(provider_error)?;
    let started = std::time::Instant::now();
    let reply = if stream {
        let mut sink = |piece| {
            record.push(match piece {
                StreamEvent::Text(text) => TurnEvent::TextDelta(text),
                StreamEvent::ToolCall(call) => TurnEvent::ToolCall(call),
            })
        };
        session.provider.stream(call, &mut sink).await
    } else {
        let reply = session.provider.send(call).await;
        if let Ok(reply) = &reply {
            if !reply.text.is_empty() {
                record.push(TurnEvent::TextDelta(reply.text.clone()));
            }
            for call in &reply.tool_calls {
                record.push(TurnEvent::ToolCall(call.clone()));
            }
        }
        reply
    };
    record.provider_call(started.elapsed());
    let reply = reply.map_err(provider_error)?;
    Ok(TurnResult {
        text: reply.text,
        tool_calls: reply.tool_calls,
        finish_reason: reply.finish_reason,
        usage: reply.usage,
        provider: session.provider_name.clone(),
        model: session.model.clone(),
    })
}

/// Test builds only (`--features fault-injection`): a way to make a turn panic from
/// outside, so that tests can show a panic never leaves a session busy.
#[cfg(feature = "fault-injection")]
pub mod fault_injection {
    use super::Message;

    /// A message with exactly this content makes its turn panic after taking the lock.
    pub const PANIC: &str = "__fault_injection: panic in the turn__";

    #[allow(clippy::panic)]
    pub(super) fn panic_if_asked(messages: &[Message]) {
        if messages.iter().any(|m| m.content == PANIC) {
            panic!("fault injection: a panic inside the turn");
        }
    }
}
