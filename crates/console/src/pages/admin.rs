//! Accounts (with the special user), enrollment tokens and the audit log.

use super::after;
use super::settings::special_dialog;
use crate::layout::{csrf, fmt_time, page, Nav};
use crate::web::{Console, Posted, Reject, Session};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use riposte_model::{Operation, Role};
use riposte_server::ServiceError;
use serde::Deserialize;

/// The accounts page's query.
#[derive(Debug, Default, Deserialize)]
pub struct AccountsQuery {
    #[serde(default)]
    dialog: String,
}

/// `GET /accounts`.
pub async fn accounts(
    State(c): State<Console>,
    s: Session,
    Query(q): Query<AccountsQuery>,
) -> Result<Response, Reject> {
    let rows = c.core().accounts(&s.caller).await?;
    let special = c.core().special_status(&s.caller).await?;
    let manage = s.can(Operation::ManageAccounts);
    let manage_special = s.can(Operation::ManageSpecialAccount);
    let body = html! {
        h1 { "Accounts" }
        @if q.dialog == "special" && manage_special && special.is_none() {
            (special_dialog(&s, "/accounts"))
        }
        table.grid #accounts {
            thead { tr { th { "Name" } th { "Kind" } th { "Role" } th { "Created" } @if manage { th { "Actions" } } } }
            tbody {
                @for a in &rows {
                    @let name = a["name"].as_str().unwrap_or_default();
                    @let kind = a["kind"].as_str().unwrap_or_default();
                    tr {
                        td { (name) }
                        td { (if kind == "special" { "Administration server special user" } else { "Administrator account" }) }
                        td { (a["role"].as_str().unwrap_or_default()) }
                        td { (fmt_time(a["created_at"].as_i64().unwrap_or(0))) }
                        @if manage {
                            td {
                                @if kind == "special" {
                                    form.inline method="post" action="/special-account/delete" {
                                        (csrf(&s))
                                        button type="submit" #delete-special { "Delete the special user" }
                                    }
                                } @else if name != s.name() {
                                    form.inline method="post" action={ "/accounts/" (super::devices::urlencode(name)) "/delete" } {
                                        (csrf(&s))
                                        button type="submit" { "Delete" }
                                    }
                                    form.inline.set-password method="post" action={ "/accounts/" (super::devices::urlencode(name)) "/password" } {
                                        (csrf(&s))
                                        input type="password" name="password" autocomplete="new-password" required minlength="12" placeholder="New password" aria-label={ "New password of " (name) };
                                        button type="submit" { "Set password" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Administration server special user" }
        @match special {
            Some(at) => p #special-state { "Created " (fmt_time(at)) ". Its password can never be changed; delete it and create it again to use another one." },
            None => p #special-state { "Not created yet. Threat Response's group actions need it." },
        }
        @if special.is_none() && manage_special {
            a.button #create-special href="/accounts?dialog=special" { "Create the administration server special user" }
        }
        @if manage {
            h2 { "New administrator account" }
            form.stack method="post" action="/accounts" #new-account {
                (csrf(&s))
                label { "Name" input type="text" name="name" required maxlength="64"; }
                label { "Role"
                    select name="role" {
                        option value="administrator" { "Administrator" }
                        option value="operator" { "Operator" }
                        option value="auditor" selected { "Auditor" }
                    }
                }
                label { "Password (at least 12 characters)" input type="password" name="password" autocomplete="new-password" required; }
                div.buttons { button type="submit" #create-account { "Create the account" } }
            }
        }
    };
    Ok(page(&c, &s, "Accounts", Nav::Accounts, body))
}

/// `POST /accounts`.
pub async fn create_account(State(c): State<Console>, p: Posted) -> Response {
    let f = &p.fields;
    let res = async {
        let role = Role::parse(&f.text("role")).map_err(ServiceError::from)?;
        let name = f.text("name");
        c.core()
            .create_account(
                &p.session.caller,
                &name,
                role,
                f.get("password").unwrap_or_default(),
            )
            .await?;
        Ok(format!("Account {name} created."))
    }
    .await;
    after(&c, &p.session, res, "/accounts")
}

/// `POST /accounts/{name}/delete`.
pub async fn delete_account(
    State(c): State<Console>,
    Path(name): Path<String>,
    p: Posted,
) -> Response {
    let res = c
        .core()
        .delete_account(&p.session.caller, &name)
        .await
        .map(|()| format!("Account {name} deleted."));
    after(&c, &p.session, res, "/accounts")
}

/// `POST /accounts/{name}/password`: an administrator sets another account's password.
pub async fn set_password(
    State(c): State<Console>,
    Path(name): Path<String>,
    p: Posted,
) -> Response {
    let res = c
        .core()
        .set_account_password(
            &p.session.caller,
            &name,
            p.fields.get("password").unwrap_or_default(),
        )
        .await
        .map(|()| format!("Password of {name} set; its sessions have ended."));
    after(&c, &p.session, res, "/accounts")
}

/// `GET /password`: the signed-in account changes its own password.
pub async fn password_page(State(c): State<Console>, s: Session) -> Response {
    let body = html! {
        h1 { "Change your password" }
        p { "Every session of " strong { (s.name()) } " ends with the change, this one too: you log in again with the new password." }
        form.stack method="post" action="/password" #password-form {
            (csrf(&s))
            input type="hidden" name="user" value=(s.name()) autocomplete="username";
            label { "Current password" input type="password" name="current_password" #current-password autocomplete="current-password" required; }
            label { "New password (at least 12 characters)" input type="password" name="new_password" #new-password autocomplete="new-password" required minlength="12"; }
            label { "New password again" input type="password" name="confirm_password" #confirm-password autocomplete="new-password" required minlength="12"; }
            div.buttons { button type="submit" #change-password-submit { "Change the password" } }
        }
    };
    page(&c, &s, "Change your password", Nav::Password, body)
}

/// `POST /password`: on success the session has ended with every other one of the
/// account, so the visitor is sent to the login page, told why.
pub async fn change_password(State(c): State<Console>, p: Posted) -> Response {
    let f = &p.fields;
    let new = f.get("new_password").unwrap_or_default();
    if f.get("confirm_password").unwrap_or_default() != new {
        let res = Err(ServiceError::BadRequest(
            "the two new passwords differ; the password is not changed".into(),
        ));
        return after(&c, &p.session, res, "/password");
    }
    let current = f.get("current_password").unwrap_or_default();
    match c
        .core()
        .change_own_password(&p.session.caller, current, new)
        .await
    {
        Ok(()) => {
            crate::web::forget(&c, &p.session);
            (
                [(axum::http::header::SET_COOKIE, crate::web::clear_cookie())],
                axum::response::Redirect::to("/login?changed=1"),
            )
                .into_response()
        }
        Err(e) => after(&c, &p.session, Err(e), "/password"),
    }
}

/// `POST /special-account`: the dialog's **Create the user**.
pub async fn create_special(State(c): State<Console>, p: Posted) -> Response {
    let back = p.fields.back("/accounts");
    let password = p.fields.get("password").unwrap_or_default();
    match c.core().create_special(&p.session.caller, password).await {
        Ok(()) => after(
            &c,
            &p.session,
            Ok("The administration server special user was created.".into()),
            &back,
        ),
        Err(e) => {
            // Refused: open the dialog again with the reason.
            let sep = if back.contains('?') { '&' } else { '?' };
            let again = if back.contains("dialog=special") {
                back
            } else {
                format!("{back}{sep}dialog=special")
            };
            after(&c, &p.session, Err(e), &again)
        }
    }
}

/// `POST /special-account/delete`.
pub async fn delete_special(State(c): State<Console>, p: Posted) -> Response {
    let res = c
        .core()
        .delete_special(&p.session.caller)
        .await
        .map(|(policies, devices)| format!("The special user was deleted, and its password removed from {policies} policies and {devices} devices' own settings: devices can no longer create group tasks until it is created again and the new password entered in their policy."));
    after(&c, &p.session, res, "/accounts")
}

/// `GET /enroll-tokens`.
pub async fn tokens(State(c): State<Console>, s: Session) -> Result<Response, Reject> {
    render_tokens(&c, &s, None).await
}

async fn render_tokens(c: &Console, s: &Session, new: Option<String>) -> Result<Response, Reject> {
    let rows = c.core().enroll_tokens(&s.caller).await?;
    let groups = c.core().groups(&s.caller).await?;
    let name = |id: i64| {
        groups
            .iter()
            .find(|g| g.id == id)
            .map(|g| g.name.clone())
            .unwrap_or_default()
    };
    let body = html! {
        h1 { "Enrollment tokens" }
        @if let Some(t) = &new {
            div.flash.ok #new-token-box {
                p { "New enrollment token (shown once; give it to " code { "riposte agent --enroll-token" } "):" }
                code #new-token { (t) }
            }
        }
        table.grid #tokens {
            thead { tr { th { "Id" } th { "Group" } th { "Uses left" } th { "Expires" } th { "Created by" } th { "Created" } } }
            tbody {
                @for t in &rows {
                    tr { td { (t.id) } td { (name(t.group_id)) } td { (t.uses_left) " of " (t.max_uses) } td { (fmt_time(t.expires_at)) } td { (t.created_by) } td { (fmt_time(t.created_at)) } }
                }
                @if rows.is_empty() { tr { td colspan="6" { "No tokens." } } }
            }
        }
        @if s.can(Operation::ManageEnrollTokens) {
            h2 { "New token" }
            form.stack method="post" action="/enroll-tokens" #new-token-form {
                (csrf(s))
                label { "Administration group"
                    select name="group" { @for g in &groups { option value=(g.name) { (g.name) } } }
                }
                label { "Valid for (hours)" input type="number" name="hours" value="24" min="1" max="8784"; }
                label { "Number of devices" input type="number" name="uses" value="1" min="1" max="1000000"; }
                div.buttons { button type="submit" #create-token { "Create the token" } }
            }
        }
    };
    Ok(page(c, s, "Enrollment tokens", Nav::Tokens, body))
}

/// `POST /enroll-tokens`: creates a token and shows it once.
pub async fn create_token(State(c): State<Console>, p: Posted) -> Response {
    let f = &p.fields;
    let hours = f.text("hours").parse::<i64>().unwrap_or(-1);
    let uses = f.text("uses").parse::<i64>().unwrap_or(-1);
    let res = c
        .core()
        .create_enroll_token(
            &p.session.caller,
            &f.text("group"),
            hours.saturating_mul(3600),
            uses,
        )
        .await;
    match res {
        Ok((token, _)) => render_tokens(&c, &p.session, Some(token))
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => after(&c, &p.session, Err(e), "/enroll-tokens"),
    }
}

/// `GET /audit`.
pub async fn audit(State(c): State<Console>, s: Session) -> Result<Response, Reject> {
    let rows = c.core().audit_log(&s.caller, 500, None).await?;
    let body = html! {
        h1 { "Audit log" }
        p.hint { "The last 500 entries, newest first." }
        table.grid #audit {
            thead { tr { th { "Time" } th { "Who" } th { "From" } th { "Action" } th { "Detail" } } }
            tbody {
                @for a in &rows {
                    tr { td { (fmt_time(a.at)) } td { (a.actor) } td { (a.source) } td { code { (a.action) } } td { (a.detail) } }
                }
            }
        }
    };
    Ok(page(&c, &s, "Audit log", Nav::Audit, body))
}
