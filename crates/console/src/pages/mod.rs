//! The pages. Handlers stay thin: read the request, call the service, render.

pub mod admin;
pub mod devices;
pub mod fleet;
pub mod policies;
pub mod settings;
pub mod tasks;

use crate::layout::bare;
use crate::web::{self, Console, Posted, Reject, Session};
use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use riposte_server::ServiceError;
use serde::Deserialize;

/// Redirects back after a form: a message on success; on a refusal of rights the
/// refusal page (403); on something that does not exist the not-found page (404): the
/// page to go back to is often that very thing, whose 404 would leave the message
/// unshown until some later page; on any other error the message on the page.
pub fn after(c: &Console, s: &Session, res: Result<String, ServiceError>, back: &str) -> Response {
    match res {
        Ok(msg) => {
            c.flash(s, true, msg);
            Redirect::to(back).into_response()
        }
        Err(
            e @ (ServiceError::Forbidden(_)
            | ServiceError::Unauthorized(_)
            | ServiceError::NotFound(_)),
        ) => Reject::from(e).into_response(),
        Err(e) => {
            c.flash(s, false, e.to_string());
            Redirect::to(back).into_response()
        }
    }
}

/// `GET /`.
pub async fn home(_s: Session) -> Redirect {
    Redirect::to("/devices")
}

fn login_form(error: Option<&str>) -> maud::Markup {
    login_form_with(error, None)
}

fn login_form_with(error: Option<&str>, notice: Option<&str>) -> maud::Markup {
    html! {
        h1 { "Riposte" }
        p.sub { "Administration console" }
        @if let Some(e) = error {
            p.flash.error #login-error role="alert" { (e) }
        }
        @if let Some(n) = notice {
            p.flash.ok #login-notice role="status" { (n) }
        }
        form.login method="post" action="/login" {
            label { "User name" input type="text" name="user" #user autocomplete="username" required autofocus; }
            label { "Password" input type="password" name="password" #password autocomplete="current-password" required; }
            button type="submit" #login { "Log in" }
        }
    }
}

/// The login page's query: `changed` after a password change ended the session.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    changed: Option<String>,
}

/// `GET /login`.
pub async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    let notice = q.changed.is_some().then_some(
        "Your password is changed and your sessions have ended: log in with the new one.",
    );
    bare("Log in", login_form_with(None, notice)).into_response()
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

/// `POST /login`: checks the account with the service and sets the session cookie.
pub async fn login_post(
    State(c): State<Console>,
    headers: HeaderMap,
    src: web::Source,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if let Err(r) = web::same_origin(&headers) {
        return r.into_response();
    }
    // An unreadable or oversized form gets the login page with the reason, not the
    // framework's plain-text answer.
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => {
            let text = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "the form is larger than the console takes ({} KiB)",
                    web::FORM_LIMIT / 1024
                )
            } else {
                format!("unreadable form: {}", e.body_text())
            };
            return (e.status(), bare("Log in", login_form(Some(&text)))).into_response();
        }
    };
    match c.core().login(f.user.trim(), &f.password, &src.0).await {
        Ok((token, expires, _)) => {
            let max_age = ((expires - riposte_store::now_ms()) / 1000).max(1);
            (
                [(header::SET_COOKIE, web::session_cookie(&token, max_age))],
                Redirect::to("/devices"),
            )
                .into_response()
        }
        Err(e) => (
            match e {
                riposte_server::ServiceError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            },
            bare("Log in", login_form(Some(&e.to_string()))),
        )
            .into_response(),
    }
}

/// `POST /logout`.
pub async fn logout(State(c): State<Console>, p: Posted) -> Response {
    web::end_session(&c, &p.session).await;
    (
        [(header::SET_COOKIE, web::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}
