//! **Devices → Policies and profiles**: one policy per administration group.

use super::after;
use super::settings::{self, TrSection};
use crate::layout::{page, tabs, Nav};
use crate::web::{Console, Posted, Reject, Session};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use riposte_model::{Operation, PolicyMode, SandboxIntegration, ThreatResponse};
use riposte_server::service::{policy_name, PolicyView, SandboxPatch};
use riposte_server::ServiceError;
use serde::Deserialize;

fn mode_text(m: Option<PolicyMode>) -> &'static str {
    match m {
        Some(PolicyMode::Enforce) => "Enforce",
        Some(PolicyMode::Undefined) => "Undefined",
        None => "Not in the policy",
    }
}

/// The policy above that enforces `section` of `p`'s, if one does.
/// The policies below whose Enforce of `section` this policy's Enforce overrides.
fn overrides_below<'a>(p: &'a PolicyView, section: &str) -> &'a [String] {
    match section {
        "threat-response" => &p.threat_response_overrides_below,
        "sandbox" => &p.sandbox_integration_overrides_below,
        _ => &[],
    }
}

fn enforced_above<'a>(p: &'a PolicyView, section: &str) -> Option<&'a str> {
    match section {
        "threat-response" => p.threat_response_enforced_above.as_deref(),
        "sandbox" => p.sandbox_integration_enforced_above.as_deref(),
        _ => None,
    }
}

/// `GET /policies`.
pub async fn list(State(c): State<Console>, s: Session) -> Result<Response, Reject> {
    let rows = c.core().policies(&s.caller).await?;
    let body = html! {
        h1 { "Policies and profiles" }
        table.grid #policies {
            thead { tr { th { "Policy" } th { "Administration group" } th { "Threat Response" } th { "Sandbox integration" } } }
            tbody {
                @for p in &rows {
                    tr {
                        td { a.policy href={ "/policies/" (p.group_id) } { (p.policy) } }
                        td { (p.group) }
                        td { (mode_text(p.threat_response.as_ref().map(|t| t.mode)))
                             @if let Some(t) = &p.threat_response { (if t.value.enabled { ", on" } else { ", off" }) } }
                        td { (mode_text(p.sandbox_integration.as_ref().map(|t| t.mode))) }
                    }
                }
            }
        }
    };
    Ok(page(&c, &s, "Policies and profiles", Nav::Policies, body))
}

/// The tab query of a policy.
#[derive(Debug, Default, Deserialize)]
pub struct PolicyQuery {
    #[serde(default)]
    tab: String,
    #[serde(default)]
    section: String,
    #[serde(default)]
    dialog: String,
}

async fn view(c: &Console, s: &Session, gid: i64) -> Result<PolicyView, Reject> {
    // Authorised by `policy`; the group's name comes from the store.
    let g = c
        .core()
        .store
        .group(gid)
        .await
        .map_err(ServiceError::from)?;
    Ok(c.core().policy(&s.caller, &g.name).await?)
}

/// `GET /policies/{gid}`: a policy, with its **Application settings** tab.
pub async fn detail(
    State(c): State<Console>,
    s: Session,
    Path(gid): Path<i64>,
    Query(q): Query<PolicyQuery>,
) -> Result<Response, Reject> {
    let p = view(&c, &s, gid).await?;
    let base = format!("/policies/{gid}");
    let tab = if q.tab == "settings" {
        "settings"
    } else {
        "general"
    };
    let draft = c.draft(&s, gid).await;
    let can_edit = s.can(Operation::ChangePolicy);
    let content = if tab == "settings" {
        let section = q.section.as_str();
        let inner = match section {
            "threat-response" => {
                let special = c.core().special_status(&s.caller).await?;
                let (stored, mode) = p
                    .threat_response
                    .clone()
                    .map(|t| (t.value, t.mode))
                    .unwrap_or((ThreatResponse::default(), PolicyMode::Undefined));
                let (value, mode) = match &draft {
                    Some(d) => settings::with_draft(stored, mode, d),
                    None => (stored, mode),
                };
                settings::threat_response(&TrSection {
                    session: &s,
                    action: format!("{base}/threat-response"),
                    here: format!("{base}?tab=settings&section=threat-response"),
                    value,
                    password_set: p.special_password_set,
                    mode: Some(mode),
                    locked_by: None,
                    provenance: None,
                    special_exists: special.is_some(),
                    can_edit,
                    can_special: s.can(Operation::ManageSpecialAccount),
                    dialog: q.dialog == "special",
                    unsaved: draft.is_some(),
                })
            }
            "sandbox" => {
                let (v, m) = p
                    .sandbox_integration
                    .clone()
                    .map(|t| (t.value, t.mode))
                    .unwrap_or((SandboxIntegration::default(), PolicyMode::Undefined));
                let action = format!("{base}/sandbox-integration");
                html! {
                    (settings::sandbox(&s, &v, Some(m), can_edit.then_some(action.as_str()), None))
                    p { "Sub-sections: " a href={ (base) "?tab=settings&section=threat-response" } { "Threat Response" } }
                }
            }
            _ => html! { p.hint { "Choose a section." } },
        };
        html! {
            @if draft.is_some() && can_edit {
                div.unsaved #policy-unsaved {
                    p { "The policy has changes that are not saved." }
                    form.inline method="post" action={ (base) "/save" } {
                        (crate::layout::csrf(&s))
                        button type="submit" #policy-save.primary { "Save" }
                    }
                    form.inline method="post" action={ (base) "/discard" } {
                        (crate::layout::csrf(&s))
                        button type="submit" { "Discard" }
                    }
                }
            }
            div.split {
                (settings::section_nav(&format!("{base}?tab=settings"), section))
                div.section-body {
                    @if let Some(above) = enforced_above(&p, section) {
                        p.hint #enforced-above {
                            (above) " above enforces this settings group: what this policy says here has no effect on any device while it does."
                        }
                    }
                    @let below = overrides_below(&p, section);
                    @if !below.is_empty() {
                        p.hint #overrides-below {
                            "This policy enforces this settings group over what "
                            (below.join(", "))
                            " below enforce" @if below.len() == 1 { "s" }
                            ": theirs has no effect on any device while this one does."
                        }
                    }
                    (inner)
                }
            }
        }
    } else {
        html! {
            dl.facts {
                dt { "Policy" } dd { (p.policy) }
                dt { "Administration group" } dd { (p.group) }
                dt { "Applies to" } dd { "The devices of " (p.group) " and of its subgroups" }
                dt { "Threat Response" } dd { (mode_text(p.threat_response.as_ref().map(|t| t.mode)))
                    @if let Some(above) = &p.threat_response_enforced_above { " (no effect: " (above) " above enforces it)" }
                    @if !p.threat_response_overrides_below.is_empty() { " (overrides what " (p.threat_response_overrides_below.join(", ")) " below enforce" @if p.threat_response_overrides_below.len() == 1 { "s" } ")" } }
                dt { "Sandbox integration" } dd { (mode_text(p.sandbox_integration.as_ref().map(|t| t.mode)))
                    @if let Some(above) = &p.sandbox_integration_enforced_above { " (no effect: " (above) " above enforces it)" }
                    @if !p.sandbox_integration_overrides_below.is_empty() { " (overrides what " (p.sandbox_integration_overrides_below.join(", ")) " below enforce" @if p.sandbox_integration_overrides_below.len() == 1 { "s" } ")" } }
            }
        }
    };
    let body = html! {
        p.crumbs { a href="/policies" { "Policies and profiles" } " › " (p.policy) }
        h1 #policy-name { (p.policy) }
        (tabs(&base, tab, &[("general", "General"), ("settings", "Application settings")]))
        div.tab-body { (content) }
    };
    Ok(page(&c, &s, &p.policy, Nav::Policies, body))
}

async fn group_name(c: &Console, gid: i64) -> Result<String, ServiceError> {
    Ok(c.core().store.group(gid).await?.name)
}

/// `POST /policies/{gid}/threat-response`: **OK** keeps the section's values with the
/// policy being edited; **Save** stores the policy (and the devices get it at once).
pub async fn set_threat_response(
    State(c): State<Console>,
    Path(gid): Path<i64>,
    p: Posted,
) -> Response {
    let s = &p.session;
    let here = format!("/policies/{gid}?tab=settings&section=threat-response");
    if !s.can(Operation::ChangePolicy) {
        return Reject::Forbidden(format!(
            "account '{}' with role {} may not change policies",
            s.name(),
            s.role()
        ))
        .into_response();
    }
    let patch = match settings::read_patch(&p.fields, true) {
        Ok(x) => x,
        Err(e) => return after(&c, s, Err(e), &here),
    };
    if p.fields.get("op") == Some("ok") {
        if let Err(e) = c.set_draft(s, gid, patch).await {
            return after(&c, s, Err(e), &here);
        }
        c.flash(
            s,
            true,
            "Threat Response changes kept. Press Save to store the policy.",
        );
        return Redirect::to(&format!("/policies/{gid}?tab=settings")).into_response();
    }
    let res = store(&c, s, gid, &patch).await;
    if res.is_err() {
        // Keep what was entered (never the password) so the form shows it again.
        let mut kept = patch;
        kept.special_password = None;
        let _ = c.set_draft(s, gid, kept).await;
    }
    after(&c, s, res, &here)
}

async fn store(
    c: &Console,
    s: &Session,
    gid: i64,
    patch: &riposte_server::service::ThreatResponsePatch,
) -> Result<String, ServiceError> {
    let name = group_name(c, gid).await?;
    c.core()
        .set_policy_threat_response(&s.caller, &name, patch)
        .await?;
    c.clear_draft(s, gid).await;
    Ok(format!(
        "{} saved. The devices of the group receive the new settings now.",
        policy_name(&name)
    ))
}

/// `POST /policies/{gid}/save`: stores the changes kept by OK.
pub async fn save(State(c): State<Console>, Path(gid): Path<i64>, p: Posted) -> Response {
    let s = &p.session;
    let here = format!("/policies/{gid}?tab=settings&section=threat-response");
    // Refused as the server would refuse it, before "nothing to save" could answer a
    // caller who may not save at all.
    if let Err(denied) = riposte_model::authorize(&s.caller.principal, Operation::ChangePolicy) {
        return after(&c, s, Err(ServiceError::from(denied)), &here);
    }
    let Some(patch) = c.draft(s, gid).await else {
        c.flash(s, true, "Nothing to save.");
        return Redirect::to(&here).into_response();
    };
    let res = store(&c, s, gid, &patch).await;
    after(&c, s, res, &here)
}

/// `POST /policies/{gid}/discard`: forgets the changes kept by OK.
pub async fn discard(State(c): State<Console>, Path(gid): Path<i64>, p: Posted) -> Response {
    c.clear_draft(&p.session, gid).await;
    after(
        &c,
        &p.session,
        Ok("Changes discarded.".into()),
        &format!("/policies/{gid}?tab=settings"),
    )
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `POST /policies/{gid}/sandbox-integration`: stores the Sandbox integration section.
pub async fn set_sandbox(State(c): State<Console>, Path(gid): Path<i64>, p: Posted) -> Response {
    let here = format!("/policies/{gid}?tab=settings&section=sandbox");
    let f = &p.fields;
    let res = async {
        let timeout = f.text("timeout").parse::<u64>().map_err(|_| {
            ServiceError::BadRequest("the request timeout must be a number of seconds".into())
        })?;
        let patch = SandboxPatch {
            mode: Some(settings::parse_mode(f.get("mode"))?),
            sandboxes: Some(lines(f.get("sandboxes").unwrap_or_default())),
            sandbox_ca_pem: None,
            watch: Some(lines(f.get("watch").unwrap_or_default())),
            request_timeout_secs: Some(timeout),
        };
        let name = group_name(&c, gid).await?;
        c.core()
            .set_policy_sandbox(&p.session.caller, &name, &patch)
            .await?;
        Ok(format!("{} saved.", policy_name(&name)))
    }
    .await;
    after(&c, &p.session, res, &here)
}
