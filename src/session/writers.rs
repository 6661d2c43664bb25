//! The writers one turn runs for: the one that took the lock, or every writer that
//! joined the turn (`onBusy: join`). What happens in the turn happens to each of them:
//! every event goes to each writer's record (so each streams, replays and ends under
//! its own turn id), every provider call counts on each. The session's feed gets each
//! event once, under the first writer's id.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::OnBusy;
use super::events::TurnEvent;
use super::feed::Feed;
use super::records::TurnRecord;
use super::turn::{TurnInput, TurnKind};
use crate::message::Message;

/// One or more writers, in arrival order; the first leads.
#[derive(Debug)]
pub struct Writers {
    records: Vec<Arc<TurnRecord>>,
    /// What each writer asked for, held for the turn (a record lets go of its messages
    /// once the turn completes).
    inputs: Vec<Arc<TurnInput>>,
    feed: Arc<Feed>,
    /// The writers' turn ids when they asked to join, for the feed.
    joined: Option<Arc<[Uuid]>>,
}

impl Writers {
    /// The writers of `records`, whose events the session's `feed` follows; `None` if
    /// there are none.
    pub fn new(records: Vec<Arc<TurnRecord>>, feed: &Arc<Feed>) -> Option<Self> {
        let inputs: Vec<_> = records.iter().map(|record| record.input()).collect();
        let joined = (inputs.first()?.on_busy == OnBusy::Join)
            .then(|| records.iter().map(|record| record.id).collect());
        Some(Self {
            records,
            inputs,
            feed: feed.clone(),
            joined,
        })
    }

    /// The writer whose record the turn's own state (streamed text, tries) is read from.
    pub fn lead(&self) -> &TurnRecord {
        &self.records[0]
    }

    pub fn records(&self) -> &[Arc<TurnRecord>] {
        &self.records
    }

    /// Appends an event to every writer's record, and to the session's feed.
    pub fn push(&self, event: TurnEvent) {
        let joined = (matches!(event, TurnEvent::Started) || event.is_terminal())
            .then(|| self.joined.clone())
            .flatten();
        self.feed.turn_event(self.lead().id, &event, joined);
        if let Some((last, others)) = self.records.split_last() {
            for record in others {
                record.push(event.clone());
            }
            last.push(event);
        }
    }

    /// Counts one provider call, and the time it took, on every writer.
    pub fn provider_call(&self, took: Duration) {
        for record in &self.records {
            record.provider_call(took);
        }
    }

    /// What the turn does: a tool output only ever runs alone.
    pub fn kind(&self) -> TurnKind {
        self.inputs[0].kind
    }

    /// Whether the provider is called in its streaming mode: if any writer streams.
    pub fn stream(&self) -> bool {
        self.inputs.iter().any(|input| input.stream)
    }

    /// The turn ids that ran together, when the writers asked to join; `None` otherwise.
    pub fn joined(&self) -> Option<Vec<Uuid>> {
        self.joined.as_deref().map(<[Uuid]>::to_vec)
    }

    /// What the writers append before any reply, each writer's messages in turn.
    pub fn staged(&self) -> impl Iterator<Item = &Message> {
        self.inputs.iter().flat_map(|input| &input.staged)
    }
}
