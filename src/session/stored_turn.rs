//! An ended turn's record as the store keeps it: JSON, written by hand on every commit
//! of a durable store (byte for byte what serde writes for [`StoredTurn`], which reads
//! it back after a restart), from the live record's parts without copying them.

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::records::{RecordState, TurnStatus};
use super::turn::{TurnError, TurnInput, TurnKind, TurnResult};
use super::{OnBusy, Priority};
use crate::json_text;
use crate::message::{self, Timestamp};

/// An ended turn as the store keeps it: what it asked for and how it ended. Its events
/// are not kept: a restored turn has none to replay. A field that holds nothing (or the
/// input's default) is left out, and reads back as that; records written before fields
/// were left out (with their `null`s) read the same.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredTurn {
    pub input: TurnInput,
    pub status: TurnStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TurnResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TurnError>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_by: Option<Uuid>,
}

/// The record of a turn that asked for `input`, stands as `state` says and returned
/// `result`, as [`StoredTurn`] JSON. A completed turn's messages are left out: they are
/// in the history, and only a turn that did not complete runs again.
pub(super) fn record_json(
    input: &TurnInput,
    state: &RecordState,
    result: Option<&TurnResult>,
) -> String {
    let completed = state.status == TurnStatus::Completed;
    let body = input.body.as_json();
    let staged: &[message::Message] = if completed { &[] } else { &input.staged };
    let mut out = Vec::with_capacity(300 + body.len() + result.map_or(0, |r| r.text.len()));
    out.extend_from_slice(br#"{"input":{"kind":"#);
    out.extend_from_slice(match input.kind {
        TurnKind::Message => br#""message""#,
        TurnKind::Instructions => br#""instructions""#,
        TurnKind::ToolOutput => br#""tool-output""#,
    });
    if !staged.is_empty() {
        out.extend_from_slice(br#","staged":"#);
        message::write_history(&mut out, staged);
    }
    match input.priority {
        Priority::High => out.extend_from_slice(br#","priority":"high""#),
        Priority::Normal => {}
        Priority::Low => out.extend_from_slice(br#","priority":"low""#),
    }
    match input.on_busy {
        OnBusy::Wait => {}
        OnBusy::Reject => out.extend_from_slice(br#","onBusy":"reject""#),
        OnBusy::Interrupt => out.extend_from_slice(br#","onBusy":"interrupt""#),
        OnBusy::Join => out.extend_from_slice(br#","onBusy":"join""#),
    }
    if input.stream {
        out.extend_from_slice(br#","stream":true"#);
    }
    out.extend_from_slice(br#","body":"#);
    out.extend_from_slice(body.as_bytes());
    write_some(
        &mut out,
        br#","ifMatch":"#,
        input.if_match,
        json_text::write_u64,
    );
    out.extend_from_slice(br#"},"status":""#);
    out.extend_from_slice(state.status.name().as_bytes());
    out.push(b'"');
    write_some(&mut out, br#","result":"#, result, |out, result| {
        result.write_json(out)
    });
    // Rare (a turn that failed): serde's own writing, which cannot fail for it.
    if let Some(Ok(error)) = state.error.as_ref().map(serde_json::to_vec) {
        out.extend_from_slice(br#","error":"#);
        out.extend_from_slice(&error);
    }
    out.extend_from_slice(br#","attempts":"#);
    json_text::write_u64(&mut out, u64::from(state.attempts));
    let times = [
        (&br#","startedAt":"#[..], state.started_at),
        (br#","endedAt":"#, state.ended_at),
    ];
    for (name, at) in times {
        write_some(&mut out, name, at, |out, at| at.write_json(out));
    }
    let durations = [
        (&br#","waitedMs":"#[..], state.waited),
        (br#","providerMs":"#, state.provider),
        (br#","firstTokenMs":"#, state.first_token),
        (br#","heldMs":"#, state.held),
    ];
    for (name, duration) in durations {
        write_some(&mut out, name, millis(duration), json_text::write_u64);
    }
    write_some(
        &mut out,
        br#","retriedBy":"#,
        state.retried_by,
        json_text::write_uuid,
    );
    out.push(b'}');
    // Only JSON text and UTF-8 texts went in.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A duration in whole milliseconds, as the record keeps it.
fn millis(duration: Option<Duration>) -> Option<u64> {
    duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `name` and `value` when there is one; nothing when there is none.
fn write_some<T>(
    out: &mut Vec<u8>,
    name: &[u8],
    value: Option<T>,
    write: impl FnOnce(&mut Vec<u8>, T),
) {
    if let Some(value) = value {
        out.extend_from_slice(name);
        write(out, value);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::{Message, Role, ToolCall};
    use crate::provider::{FinishReason, ProviderError, Usage};
    use crate::session::events::TurnEvent;
    use crate::session::records::{Retention, TurnRecord, TurnRecords};

    fn records() -> TurnRecords {
        let retention = Retention {
            records: 10,
            failed: 10,
            max_age: Duration::from_secs(60),
            events: 10,
            events_ttl: Duration::from_secs(60),
        };
        TurnRecords::new(
            retention,
            crate::memory::MemoryBudget::unbounded().account(None),
        )
    }

    fn input(kind: TurnKind, body: &str) -> TurnInput {
        let now = Timestamp::now();
        let mut answered = Message::text(Role::Assistant, "", now);
        answered.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "lookup".into(),
            arguments: r#"{"q":"é"}"#.into(),
        }];
        let mut tool = Message::text(Role::User, "out\u{1}put", now);
        tool.tool_call_id = Some("call_1".into());
        TurnInput {
            kind,
            staged: vec![
                Message::text(Role::System, "be \"brief\"\n", now),
                Message::text(Role::User, "héllo ☃ \\ </script>", now),
                answered,
                tool,
            ],
            priority: Priority::High,
            on_busy: OnBusy::Join,
            stream: true,
            body: crate::message::RawJson::parse(body.as_bytes().to_vec().into()).unwrap(),
            if_match: Some(7),
            key: None,
        }
    }

    fn result() -> TurnResult {
        TurnResult {
            text: "a \"reply\"\twith ü".into(),
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "n".into(),
                arguments: "{}".into(),
            }],
            finish_reason: FinishReason::ToolCalls,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 3,
            },
            provider: "openai".into(),
            model: "gpt".into(),
            messages_sent: Some(4),
            joined: Some(vec![Uuid::new_v4(), Uuid::new_v4()]),
        }
    }

    /// What serde writes for the same record: the reference the hand-written JSON must
    /// equal byte for byte.
    fn by_serde(input: TurnInput, state: &RecordState, result: Option<&TurnResult>) -> String {
        serde_json::to_string(&StoredTurn {
            input,
            status: state.status,
            result: result.cloned(),
            error: state.error.clone(),
            attempts: state.attempts,
            started_at: state.started_at,
            ended_at: state.ended_at,
            waited_ms: millis(state.waited),
            provider_ms: millis(state.provider),
            first_token_ms: millis(state.first_token),
            held_ms: millis(state.held),
            retried_by: state.retried_by,
        })
        .unwrap()
    }

    fn started(records: &TurnRecords, input: TurnInput) -> Arc<TurnRecord> {
        let record = records.start(Uuid::new_v4(), Arc::new(input));
        record.push(TurnEvent::Started);
        record.provider_call(Duration::from_millis(1234));
        record.push(TurnEvent::TextDelta("a".into()));
        record
    }

    #[test]
    fn the_record_is_what_serde_writes_for_it_and_reads_back() {
        let records = records();
        // A failed turn keeps its messages (a retry runs them); retried, and with a
        // body that came with white space around it.
        let body = " \n{\"content\": \"héllo\", \"n\": [1, 2.5e3, null]}\r\n\t";
        let failed = started(&records, input(TurnKind::Message, body));
        failed.push(TurnEvent::Failed(TurnError::Provider {
            provider: "openai".into(),
            error: ProviderError::Upstream {
                status: 429,
                kind: "rate_limit".into(),
                message: "slow \"down\"".into(),
                retry_after: Some(Duration::from_secs(2)),
            },
        }));
        failed.claim_retry().unwrap();
        failed.retried_by(Uuid::new_v4());
        let state = failed.snapshot();
        let written = record_json(&failed.input(), &state, None);
        assert_eq!(
            written,
            by_serde(TurnInput::clone(&failed.input()), &state, None)
        );
        let read: StoredTurn = serde_json::from_str(&written).unwrap();
        assert_eq!(read.input.staged, failed.input().staged);
        assert_eq!(read.input.body.as_json(), body.trim());

        // A completed turn leaves its messages out, as it will be once it has ended.
        for kind in [
            TurnKind::Message,
            TurnKind::Instructions,
            TurnKind::ToolOutput,
        ] {
            let running = started(&records, input(kind, "{}"));
            let mut state = running.snapshot();
            state.status = TurnStatus::Completed;
            state.ended_at = Some(Timestamp::now());
            state.held = Some(Duration::from_millis(1300));
            let result = result();
            let written = record_json(&running.input(), &state, Some(&result));
            let settled = running.input().settled();
            assert_eq!(written, by_serde(settled, &state, Some(&result)));
            let read: StoredTurn = serde_json::from_str(&written).unwrap();
            assert!(read.input.staged.is_empty());
            assert_eq!(read.result, Some(result));
        }

        // One that has not started: every time and duration null, no result, no
        // `If-Match`, other choices.
        let choices = [
            (Priority::Low, OnBusy::Reject),
            (Priority::Normal, OnBusy::Wait),
            (Priority::High, OnBusy::Interrupt),
        ];
        for (priority, on_busy) in choices {
            let plain = TurnInput {
                if_match: None,
                stream: false,
                priority,
                on_busy,
                ..input(TurnKind::Message, "[]")
            };
            let waiting = records.start(Uuid::new_v4(), Arc::new(plain));
            waiting.turned_away(TurnError::SessionFull(3));
            let state = waiting.snapshot();
            let written = record_json(&waiting.input(), &state, None);
            assert_eq!(
                written,
                by_serde(TurnInput::clone(&waiting.input()), &state, None)
            );
        }
    }

    #[test]
    fn a_completed_record_leaves_out_what_it_would_read_back_as_anyway() {
        let plain = TurnInput {
            if_match: None,
            stream: false,
            priority: Priority::Normal,
            on_busy: OnBusy::Wait,
            ..input(TurnKind::Message, r#"{"content":"hi"}"#)
        };
        let record = records().start(Uuid::new_v4(), Arc::new(plain));
        let mut state = record.snapshot();
        state.status = TurnStatus::Completed;
        state.attempts = 1;
        // A completed turn's staged messages are in the history: left out too.
        let written = record_json(&record.input(), &state, None);
        assert_eq!(
            written,
            r#"{"input":{"kind":"message","body":{"content":"hi"}},"status":"completed","attempts":1}"#
        );
    }

    #[test]
    fn a_record_written_with_every_field_reads_back_as_the_one_without() {
        // As records were written before empty fields were left out.
        let full = r#"{"input":{"kind":"message","staged":[],"priority":"normal",
            "onBusy":"wait","stream":false,"body":{"content":"hi"},"ifMatch":null},
            "status":"completed","result":null,"error":null,"attempts":1,
            "startedAt":null,"endedAt":"2026-12-01T10:00:00.000Z","waitedMs":0,
            "providerMs":null,"firstTokenMs":null,"heldMs":3,"retriedBy":null}"#;
        let read: StoredTurn = serde_json::from_str(full).unwrap();
        let compact = serde_json::to_string(&read).unwrap();
        assert_eq!(
            compact,
            r#"{"input":{"kind":"message","body":{"content":"hi"}},"status":"completed","attempts":1,"endedAt":"2026-12-01T10:00:00.000Z","waitedMs":0,"heldMs":3}"#
        );
        let again: StoredTurn = serde_json::from_str(&compact).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), compact);
    }
}
