//! A turn record as the API shows it.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ErrorDetail};
use crate::message::{RawJson, Timestamp};
use crate::session::Priority;
use crate::session::records::{TurnRecord, TurnStatus};
use crate::session::turn::{TurnKind, TurnResult};

/// One turn: what it asked for, where it stands, and its timings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Turn, example = json!({"id": "6f1c…", "sessionId": "0d6e…", "kind": "message", "status": "waiting", "priority": "normal", "position": 2, "input": {"content": "hi"}, "result": null, "error": null, "attempts": 0, "createdAt": "2026-11-23T08:00:00.123Z", "startedAt": null, "endedAt": null, "waitedMs": null, "providerMs": null, "firstTokenMs": null}))]
pub struct TurnView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub session_id: Uuid,
    pub kind: TurnKind,
    pub status: TurnStatus,
    pub priority: Priority,
    /// Only while waiting: the place it will run at (1 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// The request body as received (an object, or the bare string or array a
    /// write accepts).
    #[schema(value_type = serde_json::Value)]
    pub input: RawJson,
    pub result: Option<TurnResult>,
    pub error: Option<ErrorDetail>,
    /// Provider calls made within the turn (retries included).
    pub attempts: u32,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// From creation to taking the turn lock.
    pub waited_ms: Option<u64>,
    /// Time spent in provider calls.
    pub provider_ms: Option<u64>,
    /// From taking the turn lock to the first piece of the reply.
    pub first_token_ms: Option<u64>,
    /// The turn that retried this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub retried_by: Option<Uuid>,
}

impl TurnView {
    /// The record as it stands now; `position` comes from the turn lock.
    pub fn new(session_id: Uuid, record: &TurnRecord, position: Option<usize>) -> Self {
        let state = record.snapshot();
        let input = record.input();
        let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            id: record.id,
            session_id,
            kind: input.kind,
            status: state.status,
            priority: input.priority,
            position: position.filter(|_| state.status == TurnStatus::Waiting),
            input: input.body.clone(),
            result: state.result.as_deref().cloned(),
            error: state
                .error
                .map(|e| ApiError::from_turn(e, &session_id.to_string()).detail()),
            attempts: state.attempts,
            created_at: record.created_at,
            started_at: state.started_at,
            ended_at: state.ended_at,
            waited_ms: ms(state.waited),
            provider_ms: ms(state.provider),
            first_token_ms: ms(state.first_token),
            retried_by: state.retried_by,
        }
    }
}
