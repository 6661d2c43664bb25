//! text-session-api: a REST service that keeps chat sessions with an LLM.
//!
//! `routes` speaks HTTP and nothing else; `session` is the domain (history, turn lock,
//! turns); `provider` talks to the LLMs; `app` wires them together.

pub mod app;
pub mod clock;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod keys;
pub mod message;
pub mod metrics;
pub mod openapi;
pub mod provider;
pub mod routes;
pub mod secret;
pub mod server;
pub mod session;
