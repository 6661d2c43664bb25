//! One write, a *turn*: take the session's turn lock, stage the write's messages, call
//! the provider with the whole history, then commit everything as one step — or, if
//! anything fails or the turn is cancelled, commit nothing.
//!
//! A turn runs in a task of its own, so it belongs to the session and not to the HTTP
//! connection: a client that goes away does not cut a turn in half. How the outcome is
//! shaped into a response is the routes' business.

use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinHandle;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Commit, LockError, Message, OnBusy, Priority, Role, Session, ToolCall};
use crate::provider::{ChatRequest, FinishReason, ProviderError, Usage};
use crate::timestamp::Timestamp;

/// Which write started the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Why a turn committed nothing.
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
    /// The turn was stopped before the provider answered (the session was deleted).
    #[error("the turn was cancelled before the provider answered")]
    Cancelled,
    /// The turn's task died (a bug); the history is as it was.
    #[error("the turn failed unexpectedly: {0}")]
    Internal(String),
}

/// A started turn; its outcome can be awaited, or left to finish on its own.
#[derive(Debug)]
pub struct Turn {
    pub id: Uuid,
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
/// refused before anything runs), then runs the rest in a task of its own.
pub fn start(session: Arc<Session>, input: TurnInput) -> Result<Turn, TurnError> {
    let id = Uuid::new_v4();
    let ticket = session.lock().enter(id, input.priority, input.on_busy)?;
    let task = tokio::spawn(async move {
        let guard = ticket.acquire().await?;
        let staged = stamp(input.staged);
        let result = match input.kind {
            TurnKind::ToolOutput => None,
            TurnKind::Message | TurnKind::Instructions => {
                let run = generate(&session, &staged);
                tokio::select! {
                    biased;
                    () = guard.cancelled() => return Err(TurnError::Cancelled),
                    result = run => Some(result?),
                }
            }
        };
        let mut messages = staged;
        if let Some(result) = &result {
            messages.push(Message {
                role: Role::Assistant,
                content: result.text.clone(),
                tool_calls: result.tool_calls.clone(),
                tool_call_id: None,
                created_at: Timestamp::now(),
            });
        }
        let commit = session.commit(messages);
        drop(guard);
        Ok(TurnOutcome {
            turn_id: id,
            result,
            commit,
        })
    });
    Ok(Turn { id, task })
}

/// The time the turn took the lock is the time its messages enter the history.
fn stamp(mut staged: Vec<Message>) -> Vec<Message> {
    let now = Timestamp::now();
    for message in &mut staged {
        message.created_at = now;
    }
    staged
}

/// Calls the provider with the committed history plus the staged messages.
async fn generate(session: &Session, staged: &[Message]) -> Result<TurnResult, TurnError> {
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
                stream: false,
            })
        })
        .map_err(provider_error)?;
    let reply = session.provider.send(call).await.map_err(provider_error)?;
    Ok(TurnResult {
        text: reply.text,
        tool_calls: reply.tool_calls,
        finish_reason: reply.finish_reason,
        usage: reply.usage,
        provider: session.provider_name.clone(),
        model: session.model.clone(),
    })
}
