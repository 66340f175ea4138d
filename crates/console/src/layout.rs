//! The page shell, navigation and small display helpers.

use crate::web::{Console, Session};
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use riposte_model::{Action, Operation, Provenance};

/// The navigation entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Devices,
    Policies,
    Detections,
    Tasks,
    Quarantine,
    Accounts,
    Tokens,
    Audit,
    Password,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " — Riposte" }
            link rel="stylesheet" href="/static/console.css";
            script src="/static/console.js" defer {}
        }
    }
}

/// A full page for a logged-in visitor.
pub fn page(c: &Console, s: &Session, title: &str, nav: Nav, body: Markup) -> Response {
    let flashes = c.take_flashes(s);
    let item = |n: Nav, href: &str, label: &str| {
        html! { li { a href=(href) .active[n == nav] { (label) } } }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/devices" { "Riposte" }
                    span.who { "Signed in as " strong #whoami { (s.name()) } " (" span #role { (s.role()) } ")" }
                    a #change-password .active[nav == Nav::Password] href="/password" { "Change password" }
                    form.inline method="post" action="/logout" {
                        (csrf(s))
                        button type="submit" #logout { "Log out" }
                    }
                }
                div.shell {
                    nav.side {
                        h2 { "Devices" }
                        ul {
                            (item(Nav::Devices, "/devices", "Managed devices"))
                            (item(Nav::Policies, "/policies", "Policies and profiles"))
                        }
                        h2 { "Threat response" }
                        ul {
                            (item(Nav::Detections, "/detections", "Detections"))
                            (item(Nav::Tasks, "/tasks", "Tasks"))
                            (item(Nav::Quarantine, "/quarantine", "Quarantine"))
                        }
                        h2 { "Administration" }
                        ul {
                            @if s.can(Operation::ReadAccounts) {
                                (item(Nav::Accounts, "/accounts", "Accounts"))
                            }
                            @if s.can(Operation::ReadInventory) {
                                (item(Nav::Tokens, "/enroll-tokens", "Enrollment tokens"))
                            }
                            @if s.can(Operation::ReadAudit) {
                                (item(Nav::Audit, "/audit", "Audit log"))
                            }
                        }
                    }
                    main #main {
                        @for f in &flashes {
                            p.flash.ok[f.ok].error[!f.ok] role="status" { (f.text) }
                        }
                        (body)
                    }
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without navigation (login, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body.bare { main.bare { (body) } }
            }
        }
        .into_string(),
    )
}

/// An error page.
pub fn error_page(title: &str, text: &str) -> Html<String> {
    bare(
        title,
        html! {
            h1 { (title) }
            p.flash.error #error-text { (text) }
            p { a href="/devices" { "Back to the console" } }
        },
    )
}

/// The hidden CSRF field of a form.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A row of tabs; `current` is the active tab's key.
pub fn tabs(base: &str, current: &str, items: &[(&str, &str)]) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.tabs {
            @for (key, label) in items {
                a href={ (base) (sep) "tab=" (key) } .active[*key == current] { (label) }
            }
        }
    }
}

/// A time in milliseconds since the epoch, in UTC.
pub fn fmt_time(ms: i64) -> String {
    riposte_model::time::utc(ms)
}

/// A response action as shown to people.
pub fn action_label(a: Action) -> &'static str {
    match a {
        Action::QuarantineAndDelete => "Move the object to quarantine and delete it",
        Action::NotifyUser => "Notify the device user",
        Action::EppCriticalAreasScan => "Run a critical areas scan with the EPP application",
        Action::GroupIocScan => {
            "Run an IOC scan for the threat on all devices of the administration group"
        }
        Action::GroupIocQuarantineAndDelete => {
            "Where the IOC is found: move the object to quarantine and delete it"
        }
        Action::GroupIocEppCriticalAreasScan => {
            "Where the IOC is found: run a critical areas scan with the EPP application"
        }
    }
}

/// Where a value comes from, as a sentence.
pub fn provenance_text(p: &Provenance) -> String {
    match p {
        Provenance::Policy {
            policy,
            locked: true,
            ..
        } => format!("Enforced by policy {policy}"),
        Provenance::Policy { policy, .. } => format!("From policy {policy} (not enforced)"),
        Provenance::Local => "Local value of this device".into(),
        Provenance::Default => "Product default".into(),
    }
}
