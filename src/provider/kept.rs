//! Messages of a session's history already written as a provider sends them, kept by
//! the session from turn to turn: a request copies them instead of writing them again,
//! a run of them in one piece. Only a message whose form on the wire depends on nothing
//! but itself is kept (see [`Provider::write_alone`](super::Provider::write_alone)).

/// The messages of a history kept as one provider writes them, by their index.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeptWire<'a> {
    bytes: &'a [u8],
    ends: &'a [u32],
    /// How many messages from the first are all kept.
    leading: usize,
}

impl<'a> KeptWire<'a> {
    /// Each message kept is a comma and its JSON, ending at `ends[i]` and starting where
    /// the one before ends (at 0 for the first); a message not kept takes no bytes. So
    /// a run of kept messages is one piece of JSON, separated by commas. The first
    /// `leading` messages must all be kept.
    pub fn new(bytes: &'a [u8], ends: &'a [u32], leading: usize) -> Self {
        Self {
            bytes,
            ends,
            leading: leading.min(ends.len()),
        }
    }

    /// How many messages from the first are all kept: one run.
    pub fn leading(&self) -> usize {
        self.leading
    }

    /// Message `index` of the history as the provider sends it, if kept.
    pub fn get(&self, index: usize) -> Option<&'a [u8]> {
        self.run(index, index)
    }

    /// Messages `first` to `last` of the history as the provider sends them, separated
    /// by commas; only for messages that are all kept ([`get`](Self::get)).
    pub fn run(&self, first: usize, last: usize) -> Option<&'a [u8]> {
        let start = match first.checked_sub(1) {
            Some(before) => *self.ends.get(before)? as usize,
            None => 0,
        };
        let end = *self.ends.get(last)? as usize;
        // Past the comma; a message not kept is empty (or, once past it, inverted).
        self.bytes
            .get(start + 1..end)
            .filter(|json| !json.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_what_follows_the_comma_up_to_its_end_and_a_run_keeps_the_commas() {
        let kept = KeptWire::new(b",{a},{bb},{c}", &[4, 4, 9, 13], 1);
        assert_eq!(kept.get(0), Some(&b"{a}"[..]));
        assert_eq!(kept.get(1), None);
        assert_eq!(kept.get(2), Some(&b"{bb}"[..]));
        assert_eq!(kept.run(2, 3), Some(&b"{bb},{c}"[..]));
        assert_eq!(kept.get(4), None);
        assert_eq!(KeptWire::default().get(0), None);
    }
}
