//! Detections and quarantine across the fleet.

use super::after;
use crate::layout::{csrf, fmt_time, page, Nav};
use crate::web::{Console, Posted, Reject, Session};
use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};
use riposte_model::Operation;
use riposte_store::{DetectionRow, QuarantineRow};
use std::collections::{HashMap, HashSet};

fn field<'a>(v: &'a serde_json::Value, names: &[&str]) -> &'a str {
    names
        .iter()
        .find_map(|n| v.get(*n).and_then(|x| x.as_str()))
        .unwrap_or("")
}

/// A table of detections; `devices` names the devices when given.
pub fn detections_table(rows: &[DetectionRow], devices: Option<&HashMap<i64, String>>) -> Markup {
    html! {
        table.grid #detections {
            thead { tr {
                th { "Detected" }
                @if devices.is_some() { th { "Device" } }
                th { "File" } th { "Threat" } th { "SHA-256" } th { "Verdict from" } th { "User" } th { "Response" }
            } }
            tbody {
                @for d in rows {
                    tr.detection {
                        td { (fmt_time(d.created_at)) }
                        @if let Some(names) = devices {
                            td { a href={ "/devices/" (d.device_id) "?tab=detections" } { (names.get(&d.device_id).cloned().unwrap_or_else(|| d.device_id.to_string())) } }
                        }
                        td.path { (field(&d.record, &["path"])) }
                        td { (field(&d.record, &["threat"])) }
                        td { code.hash { (field(&d.record, &["sha256"])) } }
                        td { (field(&d.record, &["source"])) }
                        td { (field(&d.record, &["user_name"])) }
                        td {
                            ul.outcomes {
                                @for o in &d.outcomes {
                                    li { code { (o.action) } ": " (o.outcome) @if !o.detail.is_empty() { " — " (o.detail) } }
                                }
                                @if let Some(t) = d.task_id { li { a href={ "/tasks/" (t) } { "IOC scan task " (t) } } }
                                @if let Some(e) = &d.group_action_error { li.bad { "Group action failed: " (e) } }
                            }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="8" { "No detections." } } }
            }
        }
    }
}

/// The names of the devices that rows refer to (one query per distinct device), and
/// which of them are revoked.
async fn device_names(c: &Console, ids: Vec<i64>) -> (HashMap<i64, String>, HashSet<i64>) {
    let mut names = HashMap::new();
    let mut revoked = HashSet::new();
    for id in ids {
        if names.contains_key(&id) || names.len() > 2000 {
            continue;
        }
        if let Ok(d) = c.core().store.device(id).await {
            if d.revoked {
                revoked.insert(id);
            }
            names.insert(id, d.name);
        }
    }
    (names, revoked)
}

/// `GET /detections`.
pub async fn detections(State(c): State<Console>, s: Session) -> Result<Response, Reject> {
    let rows = c.core().detections(&s.caller, None).await?;
    let (names, _) = device_names(&c, rows.iter().map(|d| d.device_id).collect()).await;
    let body = html! {
        h1 { "Detections" }
        p.hint { "Objects a sandbox found malicious on the devices, newest first, with what Threat Response did." }
        (detections_table(&rows, Some(&names)))
    };
    Ok(page(&c, &s, "Detections", Nav::Detections, body))
}

/// A table of quarantine entries, with restore and delete for those who may. Entries
/// of `revoked` devices get no actions: such a device never receives a command.
pub fn quarantine_table(
    s: &Session,
    rows: &[QuarantineRow],
    devices: Option<&HashMap<i64, String>>,
    revoked: &HashSet<i64>,
    back: &str,
) -> Markup {
    let can = s.can(Operation::HandleQuarantine);
    html! {
        table.grid #quarantine {
            thead { tr {
                @if devices.is_some() { th { "Device" } }
                th { "Entry" } th { "Original path" } th { "Threat" } th { "State" } th { "Updated" }
                @if can { th { "Actions" } }
            } }
            tbody {
                @for q in rows {
                    tr {
                        @if let Some(names) = devices {
                            td { a href={ "/devices/" (q.device_id) "?tab=quarantine" } { (names.get(&q.device_id).cloned().unwrap_or_else(|| q.device_id.to_string())) } }
                        }
                        td { code { (q.entry_id) } }
                        td.path { (field(&q.record, &["original_path", "path"])) }
                        td { (field(&q.record, &["threat_name", "threat"])) }
                        td {
                            (q.state)
                            // Restored content stays allowed on the device until withdrawn.
                            @if q.state == "restored" && q.record["allowed"] == true {
                                ", content allowed on the device"
                            }
                        }
                        td { (fmt_time(q.updated_at)) }
                        @if can && revoked.contains(&q.device_id) {
                            td.hint { "device revoked" }
                        } @else if can {
                            td {
                                @if q.state == "quarantined" {
                                    @for (action, label) in [("restore", "Restore"), ("delete", "Delete")] {
                                        form.inline method="post" action="/quarantine/action" {
                                            (csrf(s))
                                            input type="hidden" name="back" value=(back);
                                            input type="hidden" name="device" value=(q.device_id);
                                            input type="hidden" name="entry" value=(q.entry_id);
                                            input type="hidden" name="action" value=(action);
                                            button type="submit" { (label) }
                                        }
                                    }
                                }
                                @if q.state == "restored" && q.record["allowed"] == true {
                                    form.inline method="post" action="/quarantine/action" {
                                        (csrf(s))
                                        input type="hidden" name="back" value=(back);
                                        input type="hidden" name="device" value=(q.device_id);
                                        input type="hidden" name="entry" value=(q.entry_id);
                                        input type="hidden" name="action" value="withdraw_allowance";
                                        button type="submit" title="The device acts on this content again when it finds it" { "Withdraw allowance" }
                                    }
                                }
                            }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="7" { "Quarantine is empty." } } }
            }
        }
    }
}

/// `GET /quarantine`.
pub async fn quarantine(State(c): State<Console>, s: Session) -> Result<Response, Reject> {
    let rows = c.core().quarantine(&s.caller, None).await?;
    let (names, revoked) = device_names(&c, rows.iter().map(|d| d.device_id).collect()).await;
    let body = html! {
        h1 { "Quarantine" }
        p.hint { "Objects in the devices' quarantine. Restore and delete are sent to the device, which reports the outcome: the entry's new state, or an alert on the device's Alerts tab when it could not carry it out. A restore allows the object's content on its device, which then leaves it alone, until the allowance is withdrawn." }
        (quarantine_table(&s, &rows, Some(&names), &revoked, "/quarantine"))
    };
    Ok(page(&c, &s, "Quarantine", Nav::Quarantine, body))
}

/// `POST /quarantine/action`: restore or delete an entry on its device.
pub async fn quarantine_action(State(c): State<Console>, p: Posted) -> Response {
    let f = &p.fields;
    let back = f.back("/quarantine");
    let action = f.text("action");
    let res = c
        .core()
        .quarantine_action(
            &p.session.caller,
            &f.text("device"),
            &f.text("entry"),
            &action,
            None,
            None,
        )
        .await
        .map(|id| {
            let change = if action == "withdraw_allowance" {
                "the entry stops showing its content as allowed"
            } else {
                "the entry's state changes"
            };
            format!("Request {id} sent to the device; {change} when the device has done it, and a failure is listed on the device's Alerts tab.")
        });
    after(&c, &p.session, res, &back)
}
