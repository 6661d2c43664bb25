//! Layers every request goes through before its route, in this order: who is calling
//! (`auth`), the body read whole within its bounds (`body`), the request sent on to the
//! process that serves its session when that is another one (`forward`), and
//! `Idempotency-Key` on POST (`idempotency`). Outside them all, a write gets the turn id
//! it will run as (`turn_id`). Wired by `server/mod.rs`.

pub mod auth;
pub mod body;
pub mod forward;
pub mod idempotency;
pub mod turn_id;
