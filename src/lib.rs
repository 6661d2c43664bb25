//! text-session-api: a REST service that keeps chat sessions with an LLM.
//!
//! Layers, top to bottom (`tests/layers.rs` checks them): `server` (router, serve),
//! `openapi`, `routes` (HTTP and nothing else), `app` (the shared state) and `error`,
//! `session` (the domain: history, turn lock, turns) and `idempotency`, `memory` (the
//! budget in bytes) and `store` (the durable record beneath the sessions), `provider`
//! (the LLMs), `metrics` and `keys`, `config` and `clock`, `message` (the conversation
//! types) and `secret`, and at the bottom `json_text` (JSON strings written fast).
//! Nothing imports from a layer above its own.

pub mod app;
pub mod clock;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod json_text;
pub mod keys;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod openapi;
pub mod provider;
pub mod routes;
pub mod secret;
pub mod server;
pub mod session;
pub mod store;
