//! Layers every request goes through before its route: who is calling (`auth`), and
//! `Idempotency-Key` on POST (`idempotency`). Wired in order by `server.rs`.

pub mod auth;
pub mod idempotency;
