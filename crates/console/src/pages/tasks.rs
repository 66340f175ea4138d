//! Tasks, with per-device progress that updates live (server-sent events) and cancel.

use super::after;
use crate::layout::{csrf, fmt_time, page, Nav};
use crate::web::{Console, Posted, Reject, Session};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use futures_util::Stream;
use maud::{html, Markup};
use riposte_model::{Operation, ScanScope, TaskAction};
use riposte_proto::IocDocument;
use riposte_server::error::ServiceError;
use riposte_server::service::{Caller, Core, TaskRequest};
use riposte_store::TaskDeviceRow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// `GET /tasks`.
pub async fn list(State(c): State<Console>, s: Session) -> Result<Response, Reject> {
    let rows = c.core().tasks(&s.caller).await?;
    let groups: HashMap<i64, String> = c
        .core()
        .groups(&s.caller)
        .await?
        .into_iter()
        .map(|g| (g.id, g.name))
        .collect();
    let mut sorted: Vec<(&i64, &String)> = groups.iter().collect();
    sorted.sort();
    let body = html! {
        h1 { "Tasks" }
        @if s.can(Operation::CreateTask) {
            details #new-task-panel {
                summary { "New IOC scan task" }
                form.stacked #new-task method="post" action="/tasks" {
                    (csrf(&s))
                    label for="new-task-name" { "Name" }
                    input type="text" name="name" #new-task-name required maxlength="200";
                    label for="new-task-group" { "Administration group (and its subgroups)" }
                    select name="group" #new-task-group {
                        @for (_, g) in &sorted { option value=(g) { (g) } }
                    }
                    label for="new-task-format" { "Indicator format" }
                    select name="format" #new-task-format {
                        option value="openioc" { "OpenIOC 1.0 / 1.1" }
                        option value="stix" { "STIX 2.1 (bundle or pattern)" }
                        option value="yara" { "YARA rules" }
                    }
                    label for="new-task-ioc" { "Indicator document (up to 200 KB here; larger ones through the API)" }
                    textarea name="content" #new-task-ioc rows="8" required {}
                    label for="new-task-scope" { "Where to look" }
                    select name="scope" #new-task-scope {
                        option value="system_drives" { "System drives" }
                        option value="critical_areas" { "Critical areas" }
                    }
                    fieldset {
                        legend { "Where the IOC is found" }
                        label { input type="checkbox" name="action" value="quarantine_and_delete" #new-task-quarantine; " Quarantine and delete" }
                        label { input type="checkbox" name="action" value="epp_critical_areas_scan" #new-task-epp; " Run the EPP critical-areas scan" }
                    }
                    button type="submit" #create-task { "Create the task" }
                }
            }
        }
        table.grid #tasks {
            thead { tr { th { "Id" } th { "Name" } th { "Group" } th { "Kind" } th { "Created by" } th { "Created" } th { "State" } } }
            tbody {
                @for t in &rows {
                    tr {
                        td { (t.id) }
                        td { a href={ "/tasks/" (t.id) } { (t.name) } }
                        td { (groups.get(&t.group_id).cloned().unwrap_or_default()) }
                        td { (if t.autonomous { "Autonomous IOC scan" } else { "IOC scan" }) }
                        td { (t.created_by) }
                        td { (fmt_time(t.created_at)) }
                        td { (if t.cancelled { "Cancelled" } else { "Active" }) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="7" { "No tasks." } } }
            }
        }
    };
    Ok(page(&c, &s, "Tasks", Nav::Tasks, body))
}

/// What a running device has swept so far (`riposte_model::tasks::progress_text`).
fn progress_text(r: &TaskDeviceRow) -> String {
    riposte_model::tasks::progress_text(r.state, &r.results)
}

fn counts(rows: &[TaskDeviceRow]) -> serde_json::Value {
    let mut m: std::collections::BTreeMap<&str, i64> = Default::default();
    for r in rows {
        *m.entry(r.state.as_str()).or_default() += 1;
    }
    let done = rows.iter().filter(|r| r.state.is_final()).count();
    serde_json::json!({ "total": rows.len(), "done": done, "states": m })
}

fn summary(rows: &[TaskDeviceRow]) -> Markup {
    let c = counts(rows);
    let total = rows.len().max(1);
    let done = c["done"].as_u64().unwrap_or(0) as usize;
    html! {
        p #progress-text { (done) " of " (rows.len()) " devices finished" }
        progress #progress max=(total) value=(done) {}
    }
}

/// A task's state from its devices': finished once every device it was given is.
fn task_state(cancelled: bool, rows: &[TaskDeviceRow]) -> &'static str {
    if cancelled {
        "Cancelled"
    } else if !rows.is_empty() && rows.iter().all(|r| r.state.is_final()) {
        "Finished on every device"
    } else {
        "Active"
    }
}

/// `GET /tasks/{id}`.
pub async fn detail(
    State(c): State<Console>,
    s: Session,
    Path(id): Path<i64>,
) -> Result<Response, Reject> {
    let (t, rows) = c.core().task(&s.caller, id).await?;
    let group = c
        .core()
        .store
        .group(t.group_id)
        .await
        .map(|g| g.name)
        .unwrap_or_default();
    let body = html! {
        p.crumbs { a href="/tasks" { "Tasks" } " › " (t.name) }
        h1 #task-name { (t.name) }
        dl.facts {
            dt { "Administration group" } dd { (group) }
            dt { "Kind" } dd { (if t.autonomous { "Autonomous IOC scan (created by Threat Response)" } else { "IOC scan" }) }
            dt { "Scope" } dd { (t.scope) }
            dt { "Actions where the IOC is found" } dd { code { (t.actions.to_string()) } }
            dt { "Created" } dd { (fmt_time(t.created_at)) " by " (t.created_by) }
            dt { "State" } dd #task-state { (task_state(t.cancelled, &rows)) }
        }
        // Nothing is left to cancel once every device has finished.
        @if task_state(t.cancelled, &rows) == "Active" && s.can(Operation::CancelTask) {
            form.inline method="post" action={ "/tasks/" (id) "/cancel" } {
                (csrf(&s))
                button type="submit" #cancel-task { "Cancel the task" }
            }
        }
        h2 { "Progress on the devices" }
        div #live data-events={ "/tasks/" (id) "/events" } {
            (summary(&rows))
            table.grid #task-devices {
                thead { tr { th { "Device" } th { "State" } th { "Progress" } th { "Hits" } th { "Reason" } th { "Updated" } } }
                tbody {
                    @for r in &rows {
                        tr id={ "dev-" (r.device_id) } {
                            td { a href={ "/devices/" (r.device_id) } { (r.device_name) } }
                            td.state { (r.state.as_str()) }
                            td.progress { (progress_text(r)) }
                            td.hits { (r.hits) }
                            td.reason { (r.reason.clone().unwrap_or_default()) }
                            td.updated { (fmt_time(r.updated_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&c, &s, &t.name, Nav::Tasks, body))
}

struct Poll {
    core: Arc<Core>,
    caller: Caller,
    /// The session's token: the stream ends when the session does (logout, expiry,
    /// account deleted), not only when the page is closed.
    token: String,
    id: i64,
    seen: HashMap<i64, (String, i64, Option<String>, String)>,
    first: bool,
    /// Every device reached a final state and that was sent: nothing more will change.
    finished: bool,
    /// Counts this stream against the session's limit until it ends.
    _slot: crate::web::StreamSlot,
}

async fn next_event(mut p: Poll) -> Option<(Result<Event, Infallible>, Poll)> {
    loop {
        if !p.first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        p.first = false;
        if p.finished || p.core.session(&p.token).await.is_err() {
            return None;
        }
        let Ok((_, rows)) = p.core.task(&p.caller, p.id).await else {
            return None;
        };
        p.finished = rows.iter().all(|r| r.state.is_final());
        let mut changed = Vec::new();
        for r in &rows {
            let key = (
                r.state.as_str().to_string(),
                r.hits,
                r.reason.clone(),
                progress_text(r),
            );
            if p.seen.get(&r.device_id) != Some(&key) {
                changed.push(serde_json::json!({
                    "device_id": r.device_id,
                    "state": r.state.as_str(),
                    "hits": r.hits,
                    "reason": r.reason.clone().unwrap_or_default(),
                    "progress": key.3,
                    "updated": fmt_time(r.updated_at),
                }));
                p.seen.insert(r.device_id, key);
            }
        }
        if !changed.is_empty() {
            let data = serde_json::json!({ "counts": counts(&rows), "rows": changed });
            let ev = Event::default().event("progress").data(data.to_string());
            return Some((Ok(ev), p));
        }
    }
}

/// `GET /tasks/{id}/events`: the devices whose state changed, polled every second.
pub async fn events(
    State(c): State<Console>,
    s: Session,
    Path(id): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Reject> {
    c.core().task(&s.caller, id).await?;
    let slot = c.stream_slot(&s.token)?;
    let start = Poll {
        core: c.core_arc(),
        caller: s.caller.clone(),
        token: s.token.clone(),
        id,
        seen: HashMap::new(),
        first: true,
        finished: false,
        _slot: slot,
    };
    Ok(Sse::new(futures_util::stream::unfold(start, next_event)).keep_alive(KeepAlive::default()))
}

/// `POST /tasks/{id}/cancel`.
pub async fn cancel(State(c): State<Console>, Path(id): Path<i64>, p: Posted) -> Response {
    let res = c
        .core()
        .cancel_task(&p.session.caller, id)
        .await
        .map(|()| format!("Task {id} cancelled; the devices are told now."));
    after(&c, &p.session, res, &format!("/tasks/{id}"))
}

/// `POST /tasks`: an IOC scan task from the form; the server checks the document
/// before any device is told.
pub async fn create(State(c): State<Console>, p: Posted) -> Response {
    let f = &p.fields;
    let scope = match f.get("scope") {
        Some("critical_areas") => ScanScope::CriticalAreas,
        _ => ScanScope::SystemDrives,
    };
    let actions: Result<Vec<TaskAction>, String> =
        f.all("action").into_iter().map(TaskAction::parse).collect();
    let name = f.text("name");
    let format = f.text("format");
    let res = match actions {
        Err(e) => Err(ServiceError::BadRequest(e)),
        Ok(actions) => {
            let req = TaskRequest {
                name: name.clone(),
                group: f.text("group"),
                iocs: vec![IocDocument {
                    name: format!("{name} ({format})"),
                    format,
                    content: f.get("content").unwrap_or_default().to_string(),
                }],
                scope,
                actions,
            };
            c.core().create_task_noting(&p.session.caller, &req).await
        }
    };
    match res {
        Ok((id, warnings)) => after(
            &c,
            &p.session,
            Ok(if warnings.is_empty() {
                format!("Task {id} created; the devices are told now.")
            } else {
                format!(
                    "Task {id} created; the devices are told now. Left out of its indicators: {}",
                    riposte_ioc::first_of(&warnings, 5)
                )
            }),
            &format!("/tasks/{id}"),
        ),
        Err(e) => after(&c, &p.session, Err(e), "/tasks"),
    }
}
