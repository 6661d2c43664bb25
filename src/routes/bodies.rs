//! Request bodies as clients send them, including the several forms the write routes
//! accept (a bare string or array for `/instructions`, a bare array or one output for
//! `/tool-output`). Turning them into domain input is `writes.rs`'s job.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};

use crate::error::at_path;
use crate::message::{Defaults, Tool};
use crate::session::{CancelMode, OnBusy, Priority};

/// One instruction, or several in order. The texts borrow from the body where the
/// JSON has them verbatim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Instructions<'a>(pub Vec<Cow<'a, str>>);

impl Instructions<'_> {
    /// The texts, owned.
    pub fn into_strings(self) -> Vec<String> {
        self.0.into_iter().map(Cow::into_owned).collect()
    }

    /// The same instructions, owning their texts.
    pub fn into_owned(self) -> Instructions<'static> {
        Instructions(
            self.0
                .into_iter()
                .map(|t| Cow::Owned(t.into_owned()))
                .collect(),
        )
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Instructions<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InstructionsVisitor(PhantomData))
    }
}

/// Reads a string or an array of strings.
struct InstructionsVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for InstructionsVisitor<'a> {
    type Value = Instructions<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Instructions(vec![Cow::Borrowed(text)]))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Instructions(vec![Cow::Owned(text.to_owned())]))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Instructions(vec![Cow::Owned(text)]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut texts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Borrowed(text)) = seq.next_element()? {
            texts.push(text);
        }
        Ok(Instructions(texts))
    }
}

/// A string that borrows from the body when it can.
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

impl PartialSchema for Instructions<'_> {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(non_blank_string())
            .item(
                ArrayBuilder::new()
                    .items(non_blank_string())
                    .min_items(Some(1)),
            )
            .description(Some(
                "One instruction, or several in order; none may be blank.",
            ))
            .into()
    }
}

impl ToSchema for Instructions<'_> {}

/// A string with at least one character that is not white space.
fn non_blank_string() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(NON_BLANK))
}

/// Any JSON value but `null`.
/// Any JSON value but null: a schema with no type (what code generators read as "any
/// value"; a list of types is not understood by all of them) and `not: {type: null}`.
/// utoipa has no `not`, so it goes in the schema's extension map, which is written out
/// as it is.
fn any_but_null() -> ObjectBuilder {
    let not_null = serde_json::json!({"type": "null"});
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "A string, or any other JSON value but null (stored as its compact JSON text).",
        ))
        .extensions(Some(utoipa::openapi::extensions::Extensions::from_iter([
            ("not", not_null),
        ])))
}

/// The pattern of a string that is not blank.
const NON_BLANK: &str = "\\S";

/// `POST /text/session/{id}/fork`; the body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"upTo": 4}))]
pub struct ForkRequest {
    /// How many of the source's messages the fork starts with, from the first; all of
    /// them when left out. At most the source's message count.
    #[schema(minimum = 0)]
    pub up_to: Option<usize>,
}

/// `POST /text/session`; every field is optional and an empty body is fine.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"provider": "echo", "instructions": "You are terse.", "defaults": {"temperature": 0.2}, "metadata": {"user": "u-42"}}))]
pub struct CreateSessionRequest {
    /// A configured provider name; the server's default when left out.
    pub provider: Option<String>,
    /// The provider's default model when left out; at most 256 characters.
    #[schema(max_length = 256, pattern = "\\S")]
    pub model: Option<String>,
    /// Become the first system messages.
    #[serde(default, deserialize_with = "owned_instructions")]
    pub instructions: Option<Instructions<'static>>,
    #[serde(default, deserialize_with = "object")]
    pub defaults: Option<Defaults>,
    #[serde(default, deserialize_with = "objects")]
    pub tools: Option<Vec<Tool>>,
    /// Free-form object, at most 16 KiB as JSON.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// Instructions that outlive the body they came in.
fn owned_instructions<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Instructions<'static>>, D::Error> {
    Ok(Option::<Instructions>::deserialize(d)?.map(Instructions::into_owned))
}

/// `POST /text/session/{id}/message`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"content": "What is the weather in Oslo?", "priority": "normal", "onBusy": "wait"}))]
pub struct MessageRequest<'a> {
    /// The user's message; trimmed, must not be blank.
    #[serde(borrow)]
    #[schema(value_type = String, min_length = 1, pattern = "\\S")]
    pub content: Cow<'a, str>,
    /// Appended as system messages before the user message.
    #[serde(borrow)]
    pub instructions: Option<Instructions<'a>>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub on_busy: OnBusy,
    /// Answer with Server-Sent Events (as does `Accept: text/event-stream`).
    #[serde(default)]
    pub stream: bool,
}

/// The object form of `POST /text/session/{id}/instructions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"instructions": ["Answer in French."], "priority": "high"}))]
pub struct InstructionsRequest<'a> {
    #[serde(borrow)]
    pub instructions: Instructions<'a>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub on_busy: OnBusy,
    /// Answer with Server-Sent Events (as does `Accept: text/event-stream`).
    #[serde(default)]
    pub stream: bool,
}

/// `POST /text/session/{id}/instructions`: the object form, or a bare string or array.
#[derive(Debug)]
pub struct InstructionsBody<'a>(pub InstructionsRequest<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for InstructionsBody<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InstructionsBodyVisitor(PhantomData))
    }
}

/// Reads the object form, or the bare instructions.
struct InstructionsBodyVisitor<'a>(PhantomData<&'a ()>);

impl<'a> InstructionsBodyVisitor<'a> {
    fn bare(instructions: Instructions<'a>) -> InstructionsBody<'a> {
        InstructionsBody(InstructionsRequest {
            instructions,
            priority: Priority::default(),
            on_busy: OnBusy::default(),
            stream: false,
        })
    }
}

impl<'de: 'a, 'a> Visitor<'de> for InstructionsBodyVisitor<'a> {
    type Value = InstructionsBody<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`{instructions, priority?, onBusy?}`, or instructions as a string or an array of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        InstructionsRequest::deserialize(MapAccessDeserializer::new(map)).map(InstructionsBody)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        InstructionsVisitor(PhantomData)
            .visit_seq(seq)
            .map(Self::bare)
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        InstructionsVisitor(PhantomData)
            .visit_borrowed_str(text)
            .map(Self::bare)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        InstructionsVisitor(PhantomData)
            .visit_str(text)
            .map(Self::bare)
    }
}

impl PartialSchema for InstructionsBody<'_> {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(InstructionsRequest::schema())
            .item(Instructions::schema())
            .description(Some(
                "`{instructions, priority?, onBusy?}`, or a bare string or array of strings.",
            ))
            .into()
    }
}

impl ToSchema for InstructionsBody<'_> {}

/// One tool output.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"callId": "call_1", "output": "{\"temperature\":21}"}))]
pub struct ToolOutputInput {
    /// The id of the tool call this answers; not blank, at most 256 characters.
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    pub call_id: String,
    /// A string, or any JSON value but null (stored as its compact JSON text).
    #[schema(schema_with = any_but_null)]
    pub output: Value,
}

/// What a tool-output writer does when the lock is held: as for the other writes, but
/// without `join` (a tool output gets no reply of its own to share).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolOutputOnBusy {
    /// Wait for the lock.
    #[default]
    Wait,
    /// Answer at once that the session is busy.
    Reject,
    /// Cancel the running turn (keeping what it had) and go before every waiter.
    Interrupt,
}

impl From<ToolOutputOnBusy> for OnBusy {
    fn from(on_busy: ToolOutputOnBusy) -> Self {
        match on_busy {
            ToolOutputOnBusy::Wait => OnBusy::Wait,
            ToolOutputOnBusy::Reject => OnBusy::Reject,
            ToolOutputOnBusy::Interrupt => OnBusy::Interrupt,
        }
    }
}

/// The object form of `POST /text/session/{id}/tool-output`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"toolOutputs": [{"callId": "call_1", "output": "sunny, 21 °C"}]}))]
pub struct ToolOutputRequest {
    #[schema(min_items = 1)]
    pub tool_outputs: Vec<ToolOutputInput>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub on_busy: ToolOutputOnBusy,
}

/// `POST /text/session/{id}/tool-output`: the object form, a bare array, or one output.
#[derive(Debug)]
pub struct ToolOutputBody(pub ToolOutputRequest);

impl<'de> Deserialize<'de> for ToolOutputBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let bare = |outputs| ToolOutputRequest {
            tool_outputs: outputs,
            priority: Priority::default(),
            on_busy: ToolOutputOnBusy::default(),
        };
        let list = match &value {
            Value::Array(items) => Some(items),
            Value::Object(fields) => fields.get("toolOutputs").and_then(Value::as_array),
            _ => None,
        };
        if let Some(i) = list.and_then(|items| items.iter().position(|item| !item.is_object())) {
            return Err(de::Error::custom(format!(
                "toolOutputs[{i}]: expected an object {{callId, output}}"
            )));
        }
        let request = match value {
            Value::Array(_) => bare(
                from_value::<_, D::Error>(value)
                    .map_err(|e| de::Error::custom(format!("toolOutputs{e}")))?,
            ),
            Value::Object(ref fields)
                if !fields.contains_key("toolOutputs") && fields.contains_key("callId") =>
            {
                bare(vec![from_value(value)?])
            }
            Value::Object(_) => from_value(value)?,
            _ => {
                return Err(de::Error::custom(
                    "expected {toolOutputs: [...]}, an array of tool outputs, or one {callId, output}",
                ));
            }
        };
        Ok(Self(request))
    }
}

impl PartialSchema for ToolOutputBody {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ToolOutputRequest::schema())
            .item(
                ArrayBuilder::new()
                    .items(ToolOutputInput::schema())
                    .min_items(Some(1)),
            )
            .item(ToolOutputInput::schema())
            .description(Some(
                "`{toolOutputs, priority?, onBusy?}`, a bare array of outputs, or one `{callId, output}`.",
            ))
            .into()
    }
}

impl ToSchema for ToolOutputBody {}

/// `POST /text/session/{id}/cancel`; the body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"mode": "rollback", "waiting": true}))]
pub struct CancelRequest {
    /// `keep` (default): commit the turn's messages and the partial reply, marked
    /// `interrupted`; `rollback`: leave the history as it was before the turn.
    #[serde(default)]
    pub mode: CancelMode,
    /// Also turn every waiting writer away with `409 turn_cancelled`.
    #[serde(default)]
    pub waiting: bool,
}

/// An optional object field: serde would also read an array as the struct's fields in
/// order, which is no documented form.
fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        value @ Value::Object(_) => from_value(value).map(Some),
        _ => Err(de::Error::custom("expected a JSON object")),
    }
}

/// An optional list of objects (see [`object`]).
fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(_) => serde_path_to_error::deserialize(item).map_err(|e| {
                    let path = match e.path().to_string().as_str() {
                        "." => format!("[{i}]"),
                        field => format!("[{i}].{field}"),
                    };
                    de::Error::custom(at_path(&path, &e.into_inner().to_string()))
                }),
                _ => Err(de::Error::custom(format!("[{i}]: expected a JSON object"))),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        _ => Err(de::Error::custom("expected an array of objects")),
    }
}

/// Deserializes a nested value keeping the JSON path of any error (`a[1].b: …`).
fn from_value<T: DeserializeOwned, E: de::Error>(value: Value) -> Result<T, E> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| E::custom(at_path(&e.path().to_string(), &e.into_inner().to_string())))
}
