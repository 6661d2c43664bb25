//! A session's messages written as JSON once and kept, on the caches' budget
//! (`HISTORY_CACHE_BYTES`, see [`Account::caches`]): histories only grow, and a
//! committed message never changes, so what was written stays true, and each answer
//! or request that carries the history copies it and writes only the messages appended
//! since. A session keeps two: its history as the API shows it (`view/encoded.rs`) and
//! as its provider is sent it (the turn's request).
//!
//! A history that no longer fits lets go of what it kept, for good, and is written out
//! each time, as without it; nothing is ever refused for it.

use crate::memory::{Account, Charge};
use crate::message::Message;
use crate::provider::{KeptWire, Provider};

/// Messages of one history written as JSON, in order, from the first.
#[derive(Debug)]
pub struct KeptJson {
    /// What was written for each message, one after the other.
    bytes: Vec<u8>,
    /// Where each written message's JSON ends in `bytes` (a message written as nothing
    /// ends where the one before it does).
    ends: Vec<u32>,
    /// How many messages from the first were all written as something.
    leading: usize,
    /// What this holds, on the caches' budget; `None` once it did not fit (or when
    /// caches are off): nothing is kept then.
    charge: Option<Charge>,
}

impl KeptJson {
    /// Nothing written yet; kept on `caches` (`None`: never kept).
    pub fn new(caches: Option<Account>) -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::new(),
            leading: 0,
            charge: caches.map(|account| account.charge(0)),
        }
    }

    /// Writes the messages of `messages` not written yet, each with `write` (which may
    /// write nothing for one), after what was written. `messages` must be the history
    /// this is kept for, or the part of it up to some point; `size_hint` says roughly
    /// how many bytes some messages take. `false` when nothing is kept: caches are off,
    /// or the history did not fit the budget (and lets go of what it kept).
    pub fn extend(
        &mut self,
        messages: &[Message],
        size_hint: impl FnOnce(&[Message]) -> usize,
        mut write: impl FnMut(&Message, &mut Vec<u8>),
    ) -> bool {
        let Some(charge) = &self.charge else {
            return false;
        };
        let Some(new) = messages
            .get(self.ends.len()..)
            .filter(|new| !new.is_empty())
        else {
            return true;
        };
        // Room is made here, doubling as a `Vec` would, so that what the budget admits
        // is what the bytes will take.
        let needed = self.bytes.len() + size_hint(new);
        let capacity = self.bytes.capacity();
        let room = if needed > capacity {
            needed.max(capacity * 2)
        } else {
            capacity
        };
        let growth = room - capacity + new.len() * size_of::<u32>();
        if charge.account().admit(growth).is_err() {
            return self.let_go();
        }
        self.bytes.reserve_exact(room - self.bytes.len());
        for message in new {
            let start = self.bytes.len();
            write(message, &mut self.bytes);
            let Ok(end) = u32::try_from(self.bytes.len()) else {
                // Past what the ends can mark (4 GiB).
                return self.let_go();
            };
            if self.leading == self.ends.len() && self.bytes.len() > start {
                self.leading += 1;
            }
            self.ends.push(end);
        }
        let held = self.bytes.capacity() + self.ends.capacity() * size_of::<u32>();
        let Some(charge) = &mut self.charge else {
            return false;
        };
        charge.add(held.saturating_sub(charge.bytes()));
        // The size is an estimate: what was written is checked against the budget too.
        charge.account().admit(0).is_ok() || self.let_go()
    }

    /// `messages` (the history this is kept for) as `provider` sends them, where kept:
    /// only the messages committed since the last call are written.
    pub fn as_sent(&mut self, messages: &[Message], provider: &Provider) -> KeptWire<'_> {
        // Its texts, plus room for the rest (which is shorter than the API's).
        const FRAME: usize = 32;
        let size_hint = |new: &[Message]| new.iter().map(|m| m.content.len() + FRAME).sum();
        let write = |message: &Message, out: &mut Vec<u8>| provider.write_alone(message, out);
        match self.extend(messages, size_hint, write) {
            true => KeptWire::new(&self.bytes, &self.ends, self.leading),
            false => KeptWire::default(),
        }
    }

    /// Every byte written.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where each written message ends in [`bytes`](Self::bytes).
    pub fn ends(&self) -> &[u32] {
        &self.ends
    }

    /// Gives back what was kept and keeps nothing from now on: trying again on every
    /// answer would cost more than it saves. Always `false`, for [`extend`](Self::extend).
    fn let_go(&mut self) -> bool {
        *self = Self::new(None);
        false
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.charge.as_ref().map_or(0, Charge::bytes)
    }
}
