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
use std::time::Instant;

use futures::FutureExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use super::context;
use super::events::TurnEvent;
use super::records::{TurnRecord, TurnStatus};
use super::runtime::{NotAdmitted, Runtime};
use super::turn_lock::{CancelMode, Ticket};
use super::{Commit, Committing, LockError, OnBusy, Priority, Session};
use crate::memory::OverBudget;
use crate::message::{ITEM_OVERHEAD, Message, Role, Timestamp, ToolCall};
use crate::provider::{ChatRequest, FinishReason, PreparedCall, ProviderError, StreamEvent, Usage};
use crate::store::{KeyRecord, StoreError};

/// Which write started the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// `If-Match`: the version the session must be at when the turn takes the lock.
    pub if_match: Option<u64>,
    /// The `Idempotency-Key` record of the request, written with the turn's commit.
    #[serde(skip)]
    pub key: Option<KeyRecord>,
}

impl TurnInput {
    /// Roughly the bytes the input holds: its messages and the body they came in.
    pub fn size_estimate(&self) -> usize {
        2 * self.staged_size() + ITEM_OVERHEAD
    }

    /// Roughly the bytes the turn will hold once committed: its input in its record,
    /// and its messages in the history.
    fn size_when_committed(&self) -> usize {
        self.size_estimate() + self.staged_size()
    }

    fn staged_size(&self) -> usize {
        self.staged.iter().map(Message::size_estimate).sum()
    }
}

/// What one generation returned.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Result, example = json!({"text": "echo: hello", "toolCalls": [], "finishReason": "stop", "usage": {"inputTokens": 1, "outputTokens": 2}, "provider": "echo", "model": "echo-1"}))]
pub struct TurnResult {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub provider: String,
    pub model: String,
    /// How many messages were sent to the provider (fewer than the history when the
    /// session bounds its context window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_sent: Option<usize>,
}

impl TurnResult {
    /// Roughly the bytes the result holds.
    pub fn size_estimate(&self) -> usize {
        let calls: usize = self.tool_calls.iter().map(ToolCall::size_estimate).sum();
        ITEM_OVERHEAD + self.text.len() + calls + self.provider.len() + self.model.len()
    }
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
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
    /// The session holds its most messages; nothing was appended.
    #[error("the session holds its most messages ({0})")]
    SessionFull(usize),
    /// `If-Match` named another version; nothing was appended.
    #[error("the session is at version {current}")]
    VersionMismatch { current: u64 },
    /// The service did not take the turn on (overloaded or shutting down).
    #[error(transparent)]
    NotAdmitted(#[from] NotAdmitted),
    /// The write would take its API key or the service past the memory budget; it was
    /// not recorded and nothing was appended.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    /// The store did not commit; nothing was appended, in memory or in the store.
    #[error(transparent)]
    Store(#[from] StoreError),
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
pub fn start(
    session: Arc<Session>,
    input: TurnInput,
    runtime: &Arc<Runtime>,
) -> Result<Turn, Rejected> {
    let id = Uuid::new_v4();
    let incoming = input.size_when_committed();
    if let Err(over) = session.account.admit(incoming) {
        runtime.metrics.turn_ended("rejected");
        return Err(Rejected {
            turn_id: id,
            error: over.into(),
        });
    }
    let entered = runtime.admit().map_err(TurnError::from).and_then(|()| {
        Ok(session
            .turn_lock()
            .enter(id, input.priority, input.on_busy)?)
    });
    let ticket = match entered {
        Ok(ticket) => ticket,
        Err(error) => {
            runtime.metrics.turn_ended("rejected");
            let record = session.turns().reject(id, input, error.clone());
            let (session, runtime) = (session.clone(), runtime.clone());
            runtime
                .clone()
                .spawn(async move { session.keep_record(&record, &runtime.store).await });
            return Err(Rejected { turn_id: id, error });
        }
    };
    let input = Arc::new(input);
    let record = session.turns().start(id, input.clone());
    if let Some(position) = ticket.position() {
        record.push(TurnEvent::Waiting { position });
    }
    let span = tracing::info_span!("turn", session_id = %session.id, turn_id = %id);
    let task = runtime
        .spawn(run(session, record.clone(), ticket, input, runtime.clone()).instrument(span));
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
    input: Arc<TurnInput>,
    runtime: Arc<Runtime>,
) -> Result<TurnOutcome, TurnError> {
    let outcome = AssertUnwindSafe(execute(&session, &record, ticket, input, &runtime))
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
    if let Err(error @ (TurnError::VersionMismatch { .. } | TurnError::SessionFull(_))) = &outcome {
        record.turned_away(error.clone());
        session.keep_record(&record, &runtime.store).await;
        observe(&runtime, &record);
        return outcome;
    }
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
    // A turn that committed had its record written with the commit.
    let committed = matches!(
        &outcome,
        Ok(_)
            | Err(TurnError::Cancelled {
                commit: Some(_),
                ..
            })
    );
    if matches!(&outcome, Err(TurnError::Store(_))) {
        // The store is failing: its writer gets the record when it can, and the
        // client is not kept waiting for a second doomed write.
        let (session, record, store_of) = (session.clone(), record.clone(), runtime.clone());
        runtime.spawn(async move { session.keep_record(&record, &store_of.store).await });
    } else if !committed {
        session.keep_record(&record, &runtime.store).await;
    }
    observe(&runtime, &record);
    outcome
}

/// Metrics and the log line of a turn that ended.
fn observe(runtime: &Runtime, record: &TurnRecord) {
    let state = record.snapshot();
    let outcome = match state.status {
        super::records::TurnStatus::Completed => "completed",
        super::records::TurnStatus::Cancelled => "cancelled",
        super::records::TurnStatus::Rejected => "rejected",
        _ => "failed",
    };
    let metrics = &runtime.metrics;
    metrics.turn_ended(outcome);
    if let Some(waited) = state.waited {
        metrics.lock_wait.observe(waited.as_secs_f64());
    }
    if let Some(held) = state.held {
        metrics.turn_duration.observe(held.as_secs_f64());
    }
    if let Some(overhead) = state.overhead() {
        metrics.turn_overhead.observe(overhead.as_secs_f64());
    }
    if runtime.settings.log_content {
        let content: Vec<&str> = record
            .input
            .staged
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        let reply = state.result.as_ref().map(|r| r.text.as_str());
        tracing::info!(
            outcome,
            attempts = state.attempts,
            ?content,
            ?reply,
            "turn ended"
        );
    } else {
        tracing::info!(outcome, attempts = state.attempts, "turn ended");
    }
}

async fn execute(
    session: &Session,
    record: &TurnRecord,
    ticket: Ticket,
    input: Arc<TurnInput>,
    runtime: &Runtime,
) -> Result<TurnOutcome, TurnError> {
    let guard = ticket.acquire().await?;
    check_preconditions(session, &input)?;
    record.push(TurnEvent::Started);
    let mut messages = stamp(&input.staged);
    #[cfg(feature = "fault-injection")]
    fault_injection::panic_if_asked(&messages);
    let turn_id = guard.turn_id();
    let ending = |status, result| Committing {
        record,
        status,
        result,
        key: input.key.as_ref(),
    };
    if input.kind == TurnKind::ToolOutput {
        let commit = commit(
            session,
            messages,
            runtime,
            ending(TurnStatus::Completed, None),
        )
        .await?;
        return Ok(TurnOutcome {
            turn_id,
            result: None,
            commit,
        });
    }
    let generated = tokio::select! {
        biased;
        mode = guard.cancelled() => Err(mode),
        result = generate(session, &messages, record, input.stream, runtime) => Ok(result?),
    };
    match generated {
        Ok(result) => {
            messages.push(assistant(
                result.text.clone(),
                result.tool_calls.clone(),
                false,
            ));
            let commit = commit(
                session,
                messages,
                runtime,
                ending(TurnStatus::Completed, Some(&result)),
            )
            .await?;
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
            // Its answer is an error (409), kept as any answer is: no key is claimed.
            let result = cancelled_result(session, partial.clone());
            let commit = commit(
                session,
                messages,
                runtime,
                Committing {
                    key: None,
                    ..ending(TurnStatus::Cancelled, Some(&result))
                },
            )
            .await?;
            Err(TurnError::Cancelled {
                partial,
                commit: Some(commit),
            })
        }
    }
}

/// Commits the turn's messages, timing the store's part for the metrics.
async fn commit(
    session: &Session,
    messages: Vec<Message>,
    runtime: &Runtime,
    turn: Committing<'_>,
) -> Result<Commit, StoreError> {
    let started = Instant::now();
    let committed = session.commit(messages, &runtime.store, turn).await;
    match &committed {
        Ok(_) => runtime
            .metrics
            .store_commit
            .observe(started.elapsed().as_secs_f64()),
        Err(error) => runtime.metrics.store_error(error.kind()),
    }
    committed
}

/// What must hold when the turn takes the lock: the version `If-Match` names, and room
/// for the turn's messages.
fn check_preconditions(session: &Session, input: &TurnInput) -> Result<(), TurnError> {
    let (version, len) = session.read(|h| (h.version, h.messages.len()));
    if let Some(expected) = input.if_match
        && expected != version
    {
        return Err(TurnError::VersionMismatch { current: version });
    }
    let reply = usize::from(input.kind != TurnKind::ToolOutput);
    let max = session.limits.messages;
    if len + input.staged.len() + reply > max {
        return Err(TurnError::SessionFull(max));
    }
    Ok(())
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
        messages_sent: None,
    }
}

/// The time the turn took the lock is the time its messages enter the history.
/// The history's own copy of the staged messages (the record keeps the input), with
/// the time the turn took the lock.
fn stamp(staged: &[Message]) -> Vec<Message> {
    let now = Timestamp::now();
    staged
        .iter()
        .map(|message| Message {
            created_at: now,
            ..message.clone()
        })
        .collect()
}

/// Calls the provider with the committed history plus the staged messages; every piece
/// of the reply goes to the turn's events as it arrives. Holds one of the provider
/// slots throughout; retries what may succeed on a second try, with backoff, never once
/// a piece of the reply was streamed, and never past the provider timeout.
async fn generate(
    session: &Session,
    staged: &[Message],
    record: &TurnRecord,
    stream: bool,
    runtime: &Runtime,
) -> Result<TurnResult, TurnError> {
    let provider = session.provider_name.as_str();
    let provider_error = |error| TurnError::Provider {
        provider: provider.to_owned(),
        error,
    };
    let (call, sent) = session.read(|history| {
        let request = ChatRequest {
            model: &session.model,
            history: &history.messages,
            staged,
            tools: &session.tools,
            params: &session.defaults,
            stream,
            left_out: context::left_out(&history.messages, staged, &session.defaults),
        };
        (session.provider.prepare(&request), request.sent())
    });
    let call = call.map_err(provider_error)?;
    let _slot = runtime.provider_slot().await;
    let settings = &runtime.settings;
    let deadline = Instant::now() + settings.provider_timeout;
    let mut retries = 0;
    let reply = loop {
        let started = Instant::now();
        let attempt = call_once(session, call.clone(), record, stream);
        let reply = tokio::time::timeout(deadline.saturating_duration_since(started), attempt)
            .await
            .unwrap_or(Err(ProviderError::Timeout(settings.provider_timeout)));
        let took = started.elapsed();
        record.provider_call(took);
        runtime.metrics.provider_call(provider, took);
        let error = match reply {
            Ok(reply) => break reply,
            Err(error) => error,
        };
        runtime.metrics.provider_error(provider, error.kind());
        let streamed = record.events.has_reply_pieces();
        if !error.is_retryable() || retries >= settings.retry.max_retries || streamed {
            return Err(provider_error(error));
        }
        let wait = error
            .retry_after()
            .unwrap_or_else(|| settings.retry.backoff(retries));
        if Instant::now() + wait >= deadline {
            return Err(provider_error(ProviderError::Timeout(
                settings.provider_timeout,
            )));
        }
        tracing::info!(provider, error = %error, wait_ms = wait.as_millis() as u64, "retrying the provider call");
        retries += 1;
        runtime.metrics.provider_retry(provider);
        tokio::time::sleep(wait).await;
    };
    runtime.metrics.tokens(
        provider,
        reply.usage.input_tokens,
        reply.usage.output_tokens,
    );
    Ok(TurnResult {
        text: reply.text,
        tool_calls: reply.tool_calls,
        finish_reason: reply.finish_reason,
        usage: reply.usage,
        provider: provider.to_owned(),
        model: session.model.clone(),
        messages_sent: Some(sent),
    })
}

/// One provider call, its pieces handed to the turn's events.
async fn call_once(
    session: &Session,
    call: PreparedCall,
    record: &TurnRecord,
    stream: bool,
) -> Result<crate::provider::ChatReply, ProviderError> {
    if stream {
        let mut sink = |piece| {
            record.push(match piece {
                StreamEvent::Text(text) => TurnEvent::TextDelta(text),
                StreamEvent::ToolCall(call) => TurnEvent::ToolCall(call),
            })
        };
        return session.provider.stream(call, &mut sink).await;
    }
    let reply = session.provider.send(call).await?;
    if !reply.text.is_empty() {
        record.push(TurnEvent::TextDelta(reply.text.clone()));
    }
    for call in &reply.tool_calls {
        record.push(TurnEvent::ToolCall(call.clone()));
    }
    Ok(reply)
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
