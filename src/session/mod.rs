//! The domain: sessions, their history and the turn lock. Knows nothing of HTTP.

mod message;

pub use message::{Defaults, Message, Role, Tool, ToolCall, ToolKind};
