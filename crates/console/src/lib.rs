//! The Riposte web console.
//!
//! Server-rendered HTML pages (maud templates) over the server's service layer
//! ([`riposte_server::service::Core`]), never over its HTTP API: every page and form calls
//! the same operations as the API, so the same authorisation and audit apply.
//!
//! The server serves these routes beside `/api/v1`:
//!
//! ```ignore
//! ServerOptions { ui: Some(Arc::new(riposte_console::router)), .. }
//! ```
//!
//! Security: a login page first; the session cookie `riposte_session` is `Secure; HttpOnly;
//! SameSite=Strict; Path=/`; every state-changing form carries a per-session CSRF token (an
//! HMAC of the session token under a key derived from the server's secret key, so every
//! server process on one database accepts it) checked before anything runs; a session holds
//! at most [`MAX_STREAMS_PER_SESSION`] live task streams; every
//! response carries a Content-Security-Policy without inline scripts or styles; every value is
//! escaped by the templates. The JavaScript (`static/console.js`) and the style sheet are
//! compiled into the binary and served from `/static/`.

mod layout;
mod pages;
mod web;

use axum::routing::{get, post};
use axum::Router;
use riposte_server::service::Core;
use std::sync::Arc;

pub use web::{CSP, MAX_STREAMS_PER_SESSION, SESSION_COOKIE};

/// The console's routes over a server core; merge them beside the API.
pub fn router(core: Arc<Core>) -> Router {
    let state = web::Console::new(core);
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login_post))
        .route("/logout", post(pages::logout))
        .route(
            "/password",
            get(pages::admin::password_page).post(pages::admin::change_password),
        )
        .route("/static/console.css", get(web::css))
        .route("/static/console.js", get(web::js))
        .route("/devices", get(pages::devices::list))
        .route("/devices/{id}", get(pages::devices::detail))
        .route("/devices/{id}/apps/riposte", get(pages::devices::app))
        .route("/devices/{id}/move", post(pages::devices::move_device))
        .route("/devices/{id}/revoke", post(pages::devices::revoke_device))
        .route("/groups", post(pages::devices::create_group))
        .route("/groups/change", post(pages::devices::change_group))
        .route(
            "/devices/{id}/threat-response",
            post(pages::devices::set_threat_response),
        )
        .route(
            "/devices/{id}/threat-response/follow-policy",
            post(pages::devices::follow_policy),
        )
        .route("/policies", get(pages::policies::list))
        .route("/policies/{gid}", get(pages::policies::detail))
        .route(
            "/policies/{gid}/threat-response",
            post(pages::policies::set_threat_response),
        )
        .route(
            "/policies/{gid}/sandbox-integration",
            post(pages::policies::set_sandbox),
        )
        .route("/policies/{gid}/save", post(pages::policies::save))
        .route("/policies/{gid}/discard", post(pages::policies::discard))
        .route("/special-account", post(pages::admin::create_special))
        .route(
            "/special-account/delete",
            post(pages::admin::delete_special),
        )
        .route("/detections", get(pages::fleet::detections))
        .route("/tasks", get(pages::tasks::list).post(pages::tasks::create))
        .route("/tasks/{id}", get(pages::tasks::detail))
        .route("/tasks/{id}/events", get(pages::tasks::events))
        .route("/tasks/{id}/cancel", post(pages::tasks::cancel))
        .route("/quarantine", get(pages::fleet::quarantine))
        .route("/quarantine/action", post(pages::fleet::quarantine_action))
        .route(
            "/accounts",
            get(pages::admin::accounts).post(pages::admin::create_account),
        )
        .route(
            "/accounts/{name}/delete",
            post(pages::admin::delete_account),
        )
        .route(
            "/accounts/{name}/password",
            post(pages::admin::set_password),
        )
        .route(
            "/enroll-tokens",
            get(pages::admin::tokens).post(pages::admin::create_token),
        )
        .route("/audit", get(pages::admin::audit))
        .layer(axum::middleware::from_fn(web::security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(web::FORM_LIMIT))
        .with_state(state)
}
