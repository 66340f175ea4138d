//! Tasks, with per-device progress that updates live (server-sent events) and cancel.

use super::after;
use crate::layout::{csrf, fmt_time, page, Nav};
use crate::web::{Console, Posted, Reject, Session};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use futures_util::Stream;
use maud::{html, Markup};
use riposte_model::Operation;
use riposte_server::service::{Caller, Core};
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
    let body = html! {
        h1 { "Tasks" }
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
            dt { "State" } dd #task-state { (if t.cancelled { "Cancelled" } else { "Active" }) }
        }
        @if !t.cancelled && s.can(Operation::CancelTask) {
            form.inline method="post" action={ "/tasks/" (id) "/cancel" } {
                (csrf(&s))
                button type="submit" #cancel-task { "Cancel the task" }
            }
        }
        h2 { "Progress on the devices" }
        div #live data-events={ "/tasks/" (id) "/events" } {
            (summary(&rows))
            table.grid #task-devices {
                thead { tr { th { "Device" } th { "State" } th { "Hits" } th { "Reason" } th { "Updated" } } }
                tbody {
                    @for r in &rows {
                        tr id={ "dev-" (r.device_id) } {
                            td { a href={ "/devices/" (r.device_id) } { (r.device_name) } }
                            td.state { (r.state.as_str()) }
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
    id: i64,
    seen: HashMap<i64, (String, i64, Option<String>)>,
    first: bool,
}

async fn next_event(mut p: Poll) -> Option<(Result<Event, Infallible>, Poll)> {
    loop {
        if !p.first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        p.first = false;
        let Ok((_, rows)) = p.core.task(&p.caller, p.id).await else {
            return None;
        };
        let mut changed = Vec::new();
        for r in &rows {
            let key = (r.state.as_str().to_string(), r.hits, r.reason.clone());
            if p.seen.get(&r.device_id) != Some(&key) {
                changed.push(serde_json::json!({
                    "device_id": r.device_id,
                    "state": r.state.as_str(),
                    "hits": r.hits,
                    "reason": r.reason.clone().unwrap_or_default(),
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
    let start = Poll {
        core: c.core_arc(),
        caller: s.caller.clone(),
        id,
        seen: HashMap::new(),
        first: true,
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
