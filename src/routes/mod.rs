//! HTTP only: extract, validate, call the domain, shape the JSON. Every route is
//! registered with its OpenAPI description, so none can exist without its spec.

pub mod bodies;
mod extract;
mod feed;
mod health;
pub mod middleware;
pub mod responses;
mod sessions;
mod stream;
mod turns;
mod writes;

use utoipa_axum::router::OpenApiRouter;

pub use health::OpenApiJson;

use crate::app::AppState;

/// Every route with its spec.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(sessions::routes())
        .merge(writes::routes())
        .merge(turns::routes())
        .merge(feed::routes())
        .merge(health::routes())
}
