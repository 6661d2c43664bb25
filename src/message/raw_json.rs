//! A JSON document kept as the text it arrived as: a write's request body, which its
//! turn's record shows as it was received and whose texts the stored messages share.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::Text;

/// Valid JSON text, held once and shared (cloning it clones a handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(Text);

/// Why bytes are not a [`RawJson`].
#[derive(Debug, thiserror::Error)]
pub enum NotJson {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
}

impl RawJson {
    /// Checks that `bytes` are one JSON value and keeps them as they are.
    pub fn parse(bytes: Bytes) -> Result<Self, NotJson> {
        let text = Text::try_from(bytes).map_err(|_| NotJson::NotUtf8)?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(Self(text))
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The document without the white space around it: what its `Serialize` writes.
    pub fn as_json(&self) -> &str {
        self.0.trim_matches([' ', '\t', '\n', '\r'])
    }

    /// The first character that is not white space (`{`, `[`, `"`, …).
    pub fn opening(&self) -> Option<u8> {
        self.0.bytes().find(|b| !b.is_ascii_whitespace())
    }

    /// Reads the document as `T`, whose strings may borrow from it; a mismatch gives
    /// the JSON path at fault (`.` for the top) and what is wrong there.
    pub fn typed<'a, T: Deserialize<'a>>(&'a self) -> Result<T, (String, String)> {
        let mut deserializer = serde_json::Deserializer::from_str(&self.0);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let error = e.into_inner();
            // The position adds nothing to the path, and a body read in other ways
            // (bare forms, nested values) would not have one.
            let at = format!(" at line {} column {}", error.line(), error.column());
            let message = error.to_string();
            let message = message.strip_suffix(&at).unwrap_or(&message).to_owned();
            (path, message)
        })
    }

    /// Texts read from this document (by [`typed`](Self::typed)) as message texts.
    /// Those read verbatim (no escapes in the JSON) share this document's buffer when
    /// they make up at least half of it, so a stored message does not keep alive a
    /// body mostly made of something else; the others are copied.
    pub fn texts<'a>(&self, parts: impl IntoIterator<Item = Cow<'a, str>>) -> Vec<Text> {
        // Each part, and whether it lies in this document's buffer.
        let parts: Vec<(Cow<'a, str>, bool)> = parts
            .into_iter()
            .map(|part| {
                let held = matches!(&part, Cow::Borrowed(text) if self.holds(text));
                (part, held)
            })
            .collect();
        let shared: usize = parts
            .iter()
            .filter(|(_, held)| *held)
            .map(|(p, _)| p.len())
            .sum();
        let share = shared * 2 >= self.len();
        parts
            .into_iter()
            .map(|(part, held)| match part {
                Cow::Borrowed(text) if share && held => self.0.slice_ref(text),
                part => Text::from(part.into_owned()),
            })
            .collect()
    }

    /// Whether `text` shares this document's buffer.
    pub fn holds(&self, text: &str) -> bool {
        let span = self.0.as_bytes().as_ptr_range();
        let range = text.as_bytes().as_ptr_range();
        !text.is_empty() && span.start <= range.start && range.end <= span.end
    }
}

impl From<serde_json::Value> for RawJson {
    fn from(value: serde_json::Value) -> Self {
        Self(value.to_string().into())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Self(Text::from(String::from(Box::<str>::from(raw)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        content: Cow<'a, str>,
    }

    fn raw(text: &str) -> RawJson {
        RawJson::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    #[test]
    fn only_json_is_kept() {
        assert!(RawJson::parse(Bytes::from_static(b"{\"a\":")).is_err());
        assert!(RawJson::parse(Bytes::from_static(b"\xff")).is_err());
        assert_eq!(raw(" [1, 2] ").opening(), Some(b'['));
    }

    #[test]
    fn verbatim_texts_share_the_buffer_and_escaped_ones_are_copied() {
        let body = raw(r#"{"content": "a long enough text to be most of the body"}"#);
        let typed: Body = body.typed().unwrap();
        let texts = body.texts([typed.content]);
        assert_eq!(texts[0], "a long enough text to be most of the body");
        assert!(body.holds(&texts[0]));

        let body = raw(r#"{"content": "line one\nline two, and more text here"}"#);
        let typed: Body = body.typed().unwrap();
        let texts = body.texts([typed.content]);
        assert_eq!(texts[0], "line one\nline two, and more text here");
        assert!(!body.holds(&texts[0]));
    }

    #[test]
    fn a_small_text_in_a_large_body_is_copied() {
        let body = raw(&format!(
            r#"{{"content": "hi", "other": "{}"}}"#,
            "x".repeat(1000)
        ));
        let typed: Body = body.typed().unwrap();
        let texts = body.texts([typed.content]);
        assert_eq!(texts[0], "hi");
        assert!(!body.holds(&texts[0]));
    }

    #[test]
    fn it_is_written_out_as_received_and_read_back() {
        let body = raw(r#"{"content":"hi","priority":"high"}"#);
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, r#"{"content":"hi","priority":"high"}"#);
        let back: RawJson = serde_json::from_str(&json).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn a_type_mismatch_names_its_path_without_a_position() {
        let body = raw(r#"{"content": 7}"#);
        let (path, message) = body.typed::<Body>().unwrap_err();
        assert_eq!(path, "content");
        assert_eq!(message, "invalid type: integer `7`, expected a string");
    }
}
