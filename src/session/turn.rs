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
use std::sync::{Arc, PoisonError};
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
use super::turn_lock::{CancelMode, Grant, Ticket, TurnGuard};
use super::writers::Writers;
use super::{Commit, Committing, LockError, OnBusy, Priority, Session};
use crate::memory::OverBudget;
use crate::message::{ITEM_OVERHEAD, Message, RawJson, Role, Timestamp, ToolCall};
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<Message>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_busy: OnBusy,
    /// Call the provider in its streaming mode.
    #[serde(default, skip_serializing_if = "is_default")]
    pub stream: bool,
    /// The request body as received, for the turn's record (the staged texts share
    /// its buffer where they can).
    pub body: RawJson,
    /// `If-Match`: the version the session must be at when the turn takes the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<u64>,
    /// The `Idempotency-Key` record of the request, written with the turn's commit.
    #[serde(skip)]
    pub key: Option<KeyRecord>,
}

/// Whether a field of a turn's record holds what it reads back as when left out.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl TurnInput {
    /// Roughly the bytes the input holds: the body, and its messages less the texts
    /// that share the body's buffer.
    pub fn size_estimate(&self) -> usize {
        let own: usize = self
            .staged
            .iter()
            .map(|m| {
                m.size_estimate()
                    - if self.body.holds(&m.content) {
                        m.content.len()
                    } else {
                        0
                    }
            })
            .sum();
        ITEM_OVERHEAD + self.body.len() + own
    }

    /// Roughly the bytes the turn will hold once committed: its input in its record,
    /// and its messages in the history.
    fn size_when_committed(&self) -> usize {
        self.size_estimate() + self.staged_size()
    }

    fn staged_size(&self) -> usize {
        self.staged.iter().map(Message::size_estimate).sum()
    }

    /// The input as a completed turn keeps it: without its messages (the history holds
    /// them, and only a turn that did not complete runs again) and without its key.
    pub fn settled(&self) -> TurnInput {
        TurnInput {
            kind: self.kind,
            staged: Vec::new(),
            priority: self.priority,
            on_busy: self.on_busy,
            stream: self.stream,
            body: self.body.clone(),
            if_match: self.if_match,
            key: None,
        }
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
    /// Only on writes sent with `onBusy: "join"`: the turn ids of every write this one
    /// reply answers, in the order their messages were appended (this write's own
    /// included; only its own when it ran alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub joined: Option<Vec<Uuid>>,
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
    /// The generation's result; `None` for tool outputs. Shared with the turn's
    /// terminal event and its record.
    pub result: Option<Arc<TurnResult>>,
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

/// Starts a turn `id` (new, never used before): asks for the turn lock at once (so a
/// busy or overloaded session is refused before anything runs), records the turn, then
/// runs the rest in a task of its own.
/// A write turned away is still recorded (as `rejected`) and named by `turn_id`.
pub fn start(
    id: Uuid,
    session: Arc<Session>,
    input: TurnInput,
    runtime: &Arc<Runtime>,
) -> Result<Turn, Rejected> {
    let incoming = input.size_when_committed();
    if let Err(over) = session.account.admit(incoming) {
        runtime.metrics.turn_ended("rejected");
        return Err(Rejected {
            turn_id: id,
            error: over.into(),
        });
    }
    let input = Arc::new(input);
    // Recorded before it enters the lock, so that a turn it joins finds its record.
    let record = session.turns().start(id, input.clone());
    let entered = runtime.admit().map_err(TurnError::from).and_then(|()| {
        let waits = |position| {
            let waiting = TurnEvent::Waiting { position };
            session.feed().turn_event(id, &waiting, None);
            record.push(waiting);
        };
        Ok(session
            .turn_lock()
            .enter(id, input.priority, input.on_busy, waits)?)
    });
    let ticket = match entered {
        Ok(ticket) => ticket,
        Err(error) => {
            runtime.metrics.turn_ended("rejected");
            record.turned_away(error.clone());
            let (session, runtime) = (session.clone(), runtime.clone());
            runtime
                .clone()
                .spawn(async move { session.keep_record(&record, &runtime.store).await });
            return Err(Rejected { turn_id: id, error });
        }
    };
    let span = tracing::info_span!("turn", session_id = %session.id, turn_id = %id);
    // Boxed: the turn's future is large (the provider call is in it), and the task would
    // otherwise move it whole into its cell and write it whole again when it ends.
    let turn = Box::pin(run(session, record.clone(), ticket, runtime.clone()).instrument(span));
    let task = runtime.spawn(turn);
    Ok(Turn { id, record, task })
}

/// A write turned away before it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The turn id the write was recorded under.
    pub turn_id: Uuid,
    pub error: TurnError,
}

/// Waits for the lock, then runs the turn (when this writer leads it) or waits for the
/// turn it joined to end; this writer's outcome either way.
async fn run(
    session: Arc<Session>,
    record: Arc<TurnRecord>,
    ticket: Ticket,
    runtime: Arc<Runtime>,
) -> Result<TurnOutcome, TurnError> {
    match ticket.acquire().await {
        Ok(Grant::Lead(guard)) => lead(&session, &record, guard, &runtime).await,
        Ok(Grant::Joined(_)) => outcome_of(record.id, &*record.events.ending().await),
        Err(error) => {
            let outcome = Err(TurnError::from(error));
            if let Some(writers) = Writers::new(vec![record], session.feed()) {
                writers.push(ending(&session, &writers, &outcome));
                end(&session, &writers, &outcome, &runtime).await;
            }
            outcome
        }
    }
}

/// Runs the turn the lock was handed to `own` for: every writer the guard names that
/// may still run (its `If-Match` holds, its messages fit), as one turn. `own`'s outcome:
/// if it was turned away itself, at once, the others' turn running on in a task of its
/// own.
async fn lead(
    session: &Arc<Session>,
    own: &Arc<TurnRecord>,
    mut guard: TurnGuard,
    runtime: &Arc<Runtime>,
) -> Result<TurnOutcome, TurnError> {
    let members = guard
        .members()
        .iter()
        .filter_map(|&id| {
            if id == own.id {
                Some(own.clone())
            } else {
                session.turns().get(id)
            }
        })
        .collect();
    let (admitted, refused) = check_preconditions(session, members);
    let any_refused = !refused.is_empty();
    let mut own_refusal = None;
    for (record, error) in refused {
        session
            .feed()
            .turn_event(record.id, &TurnEvent::Failed(error.clone()), None);
        record.turned_away(error.clone());
        session.keep_record(&record, &runtime.store).await;
        observe(runtime, &record);
        if record.id == own.id {
            own_refusal = Some(error);
        }
    }
    let Some(writers) = Writers::new(admitted, session.feed()) else {
        return Err(own_refusal.unwrap_or_else(|| TurnError::Internal("no writer".into())));
    };
    if any_refused {
        // Only then do the writers differ from those the lock was handed to: a plain
        // turn makes no list here.
        guard.narrow(writers.records().iter().map(|record| record.id).collect());
    }
    if let Some(refusal) = own_refusal {
        // Its answer is its refusal, now; the others' turn runs on in a task of its own.
        let (session, tracked) = (session.clone(), runtime.clone());
        let others = async move { run_turn(&session, &writers, guard, &tracked).await };
        runtime.spawn(others.instrument(tracing::Span::current()));
        return Err(refusal);
    }
    run_turn(session, &writers, guard, runtime)
        .await
        .map(|outcome| TurnOutcome {
            turn_id: own.id,
            ..outcome
        })
}

/// The turn itself, holding the lock, ended on every writer's record whatever way it
/// ends (a panic included) before the lock passes on.
async fn run_turn(
    session: &Arc<Session>,
    writers: &Writers,
    guard: TurnGuard,
    runtime: &Arc<Runtime>,
) -> Result<TurnOutcome, TurnError> {
    let outcome = AssertUnwindSafe(execute(session, writers, &guard, runtime))
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
    writers.push(ending(session, writers, &outcome));
    // Every writer (and the feed) has the turn's end before the next turn starts.
    drop(guard);
    end(session, writers, &outcome, runtime).await;
    if writers.records().len() > 1 {
        runtime.metrics.turn_joined(writers.records().len());
    }
    outcome
}

/// A joined writer's outcome, read from how its turn ended.
fn outcome_of(turn_id: Uuid, ending: &TurnEvent) -> Result<TurnOutcome, TurnError> {
    match ending {
        TurnEvent::Completed { result, commit } => Ok(TurnOutcome {
            turn_id,
            result: result.clone(),
            commit: *commit,
        }),
        TurnEvent::Cancelled { result, commit } => Err(TurnError::Cancelled {
            partial: result.text.clone(),
            commit: *commit,
        }),
        TurnEvent::Failed(error) => Err(error.clone()),
        other => Err(TurnError::Internal(format!(
            "the turn ended with {other:?}"
        ))),
    }
}

/// The terminal event of a turn that ended with `outcome`.
fn ending(
    session: &Session,
    writers: &Writers,
    outcome: &Result<TurnOutcome, TurnError>,
) -> TurnEvent {
    let cancelled = |partial: String| TurnResult {
        joined: writers.joined(),
        ..cancelled_result(session, partial)
    };
    match outcome {
        Ok(outcome) => TurnEvent::Completed {
            result: outcome.result.clone(),
            commit: outcome.commit,
        },
        Err(TurnError::Cancelled { partial, commit }) => TurnEvent::Cancelled {
            result: Arc::new(cancelled(partial.clone())),
            commit: *commit,
        },
        Err(TurnError::Lock(LockError::Cancelled)) => TurnEvent::Cancelled {
            result: Arc::new(cancelled(String::new())),
            commit: None,
        },
        Err(error) => TurnEvent::Failed(error.clone()),
    }
}

/// Ends the turn on every writer's record once its terminal event is in: the record
/// stored if no commit stored it, the metrics and the log line.
async fn end(
    session: &Arc<Session>,
    writers: &Writers,
    outcome: &Result<TurnOutcome, TurnError>,
    runtime: &Arc<Runtime>,
) {
    // A turn that committed had its records written with the commit.
    let committed = matches!(
        outcome,
        Ok(_)
            | Err(TurnError::Cancelled {
                commit: Some(_),
                ..
            })
    );
    for record in writers.records() {
        if matches!(outcome, Err(TurnError::Store(_))) {
            // The store is failing: its writer gets the record when it can, and the
            // client is not kept waiting for a second doomed write.
            let (session, record, store_of) = (session.clone(), record.clone(), runtime.clone());
            runtime.spawn(async move { session.keep_record(&record, &store_of.store).await });
        } else if !committed {
            session.keep_record(record, &runtime.store).await;
        }
        observe(runtime, record);
        record.settle();
    }
}

/// Metrics and the log line of a turn that ended, for one of its writers.
fn observe(runtime: &Runtime, record: &TurnRecord) {
    let (status, waited, held, overhead, attempts) =
        record.read_state(|s| (s.status, s.waited, s.held, s.overhead(), s.attempts));
    let outcome = match status {
        TurnStatus::Completed => "completed",
        TurnStatus::Cancelled => "cancelled",
        TurnStatus::Rejected => "rejected",
        _ => "failed",
    };
    let metrics = &runtime.metrics;
    metrics.turn_ended(outcome);
    if let Some(waited) = waited {
        metrics.lock_wait.observe(waited.as_secs_f64());
    }
    if let Some(held) = held {
        metrics.turn_duration.observe(held.as_secs_f64());
    }
    if let Some(overhead) = overhead {
        metrics.turn_overhead.observe(overhead.as_secs_f64());
    }
    if runtime.settings.log_content {
        let input = record.input();
        let content: Vec<&str> = input.staged.iter().map(|m| &*m.content).collect();
        let state = record.snapshot();
        let reply = state.result.as_ref().map(|r| r.text.as_str());
        tracing::info!(
            turn_id = %record.id,
            outcome,
            attempts,
            ?content,
            ?reply,
            "turn ended"
        );
    } else {
        tracing::info!(turn_id = %record.id, outcome, attempts, "turn ended");
    }
}

/// The turn itself, holding the lock: stage the writers' messages, call the provider,
/// commit, or keep or roll back when cancelled.
async fn execute(
    session: &Session,
    writers: &Writers,
    guard: &TurnGuard,
    runtime: &Runtime,
) -> Result<TurnOutcome, TurnError> {
    writers.push(TurnEvent::Started);
    let mut messages = stamp(writers.staged());
    #[cfg(feature = "fault-injection")]
    fault_injection::panic_if_asked(&messages);
    let turn_id = guard.turn_id();
    let ending = |status, result| Committing {
        writers: writers.records(),
        status,
        result,
        claim_keys: true,
    };
    if writers.kind() == TurnKind::ToolOutput {
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
        result = generate(session, &messages, writers, runtime) => Ok(result?),
    };
    match generated {
        Ok(result) => {
            let result = TurnResult {
                joined: writers.joined(),
                ..result
            };
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
                result: Some(Arc::new(result)),
                commit,
            })
        }
        Err(CancelMode::Rollback) => Err(TurnError::Cancelled {
            partial: writers.lead().events.text_so_far(),
            commit: None,
        }),
        Err(CancelMode::Keep) => {
            let partial = writers.lead().events.text_so_far();
            messages.push(assistant(partial.clone(), Vec::new(), true));
            // Its answer is an error (409), kept as any answer is: no key is claimed.
            let result = TurnResult {
                joined: writers.joined(),
                ..cancelled_result(session, partial.clone())
            };
            let commit = commit(
                session,
                messages,
                runtime,
                Committing {
                    claim_keys: false,
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

/// What must hold for each writer when the turn takes the lock: the version its
/// `If-Match` names, and room for its messages (after those of the writers before it,
/// and one reply for all). The writers that may run, in order, and those turned away.
#[allow(clippy::type_complexity)]
fn check_preconditions(
    session: &Session,
    members: Vec<Arc<TurnRecord>>,
) -> (Vec<Arc<TurnRecord>>, Vec<(Arc<TurnRecord>, TurnError)>) {
    let (version, len) = session.read(|h| (h.version, h.messages.len()));
    let max = session.limits.messages;
    let mut used = len;
    let mut admitted = Vec::with_capacity(members.len());
    let mut refused = Vec::new();
    for record in members {
        let input = record.input();
        if let Some(expected) = input.if_match
            && expected != version
        {
            refused.push((record, TurnError::VersionMismatch { current: version }));
            continue;
        }
        let reply = usize::from(input.kind != TurnKind::ToolOutput);
        if used + input.staged.len() + reply > max {
            refused.push((record, TurnError::SessionFull(max)));
            continue;
        }
        used += input.staged.len();
        admitted.push(record);
    }
    (admitted, refused)
}

fn assistant(text: String, tool_calls: Vec<ToolCall>, interrupted: bool) -> Message {
    Message {
        role: Role::Assistant,
        content: text.into(),
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
        joined: None,
    }
}

/// The time the turn took the lock is the time its messages enter the history.
/// The history's own copy of the staged messages (the record keeps the input), with
/// the time the turn took the lock.
fn stamp<'a>(staged: impl Iterator<Item = &'a Message>) -> Vec<Message> {
    let now = Timestamp::now();
    staged
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
    writers: &Writers,
    runtime: &Runtime,
) -> Result<TurnResult, TurnError> {
    let stream = writers.stream();
    let provider = session.provider_name.as_str();
    let provider_error = |error| TurnError::Provider {
        provider: provider.to_owned(),
        error,
    };
    let (call, sent) = session.read(|history| {
        // The history as the provider is sent it, kept: only the messages committed
        // since the last turn are written into it.
        let mut kept = history.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = kept.as_sent(&history.messages, &session.provider);
        let request = ChatRequest {
            model: &session.model,
            history: &history.messages,
            staged,
            tools: &session.tools,
            params: &session.defaults,
            stream,
            left_out: context::left_out(&history.messages, staged, &session.defaults),
        };
        (session.provider.prepare(&request, kept), request.sent())
    });
    let call = call.map_err(provider_error)?;
    let _slot = runtime.provider_slot().await;
    let settings = &runtime.settings;
    let deadline = Instant::now() + settings.provider_timeout;
    let mut retries = 0;
    let metrics = runtime.metrics.provider(provider);
    let reply = loop {
        let started = Instant::now();
        let attempt = call_once(session, call.clone(), writers, stream);
        let reply = tokio::time::timeout(deadline.saturating_duration_since(started), attempt)
            .await
            .unwrap_or(Err(ProviderError::Timeout(settings.provider_timeout)));
        let took = started.elapsed();
        writers.provider_call(took);
        metrics.call(took);
        let error = match reply {
            Ok(reply) => break reply,
            Err(error) => error,
        };
        runtime.metrics.provider_error(provider, error.kind());
        let streamed = writers.lead().events.has_reply_pieces();
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
    metrics.tokens(reply.usage.input_tokens, reply.usage.output_tokens);
    Ok(TurnResult {
        text: reply.text,
        tool_calls: reply.tool_calls,
        finish_reason: reply.finish_reason,
        usage: reply.usage,
        provider: provider.to_owned(),
        model: session.model.clone(),
        messages_sent: Some(sent),
        joined: None,
    })
}

/// One provider call, its pieces handed to the turn's events.
async fn call_once(
    session: &Session,
    call: PreparedCall,
    writers: &Writers,
    stream: bool,
) -> Result<crate::provider::ChatReply, ProviderError> {
    if stream {
        let mut sink = |piece| {
            writers.push(match piece {
                StreamEvent::Text(text) => TurnEvent::TextDelta(text),
                StreamEvent::ToolCall(call) => TurnEvent::ToolCall(call),
            })
        };
        return session.provider.stream(call, &mut sink).await;
    }
    let reply = session.provider.send(call).await?;
    if !reply.text.is_empty() {
        writers.push(TurnEvent::TextDelta(reply.text.clone()));
    }
    for call in &reply.tool_calls {
        writers.push(TurnEvent::ToolCall(call.clone()));
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
