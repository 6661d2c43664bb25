//! Mock providers for the tests: a small axum server per wire protocol (`mock_provider`)
//! that checks each request as the real API would (`mock_openai`, `mock_anthropic`:
//! what it rejects, and the replies and stream frames it sends), counts the calls, and
//! lets a test pause, fail, slow down or cut a reply. Shared by the integration tests
//! (`tests/api/`) and the property tests (`tests/properties.rs`). And a database of its
//! own per test on the Postgres the tests are given (`postgres`).

pub mod mock_anthropic;
pub mod mock_openai;
pub mod mock_provider;
pub mod postgres;
