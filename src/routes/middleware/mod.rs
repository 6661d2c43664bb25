//! Layers every request goes through before its route, in this order: who is calling
//! (`auth`), the body read whole within its bounds (`body`), and `Idempotency-Key` on
//! POST (`idempotency`). Wired by `server/mod.rs`.

pub mod auth;
pub mod body;
pub mod idempotency;
