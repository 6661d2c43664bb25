//! Integration tests: the real server over HTTP, with mock providers on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod idempotency;
mod service;
mod sse;

mod atomicity;
mod bounds;
mod cancel;
mod concurrency;
mod context;
mod conversation;
mod durable;
mod guard;
mod instances;
mod openapi;
mod operations;
mod ordering;
mod process;
mod providers;
mod scale;
mod sessions;
mod store_faults;
mod streaming;
mod turn_endings;
mod turns;
mod validation;
mod writes;
