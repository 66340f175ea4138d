//! **Devices → Managed devices**: the group tree, device lists and a device's pages.

use super::settings::{self, TrSection};
use super::{after, fleet};
use crate::layout::{csrf, fmt_time, page, provenance_text, tabs, Nav};
use crate::web::{Console, Posted, Reject, Session};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use riposte_model::{GroupNode, Operation, Provenance};
use serde::Deserialize;
use std::collections::HashMap;

/// Devices on one page of the list.
pub const PAGE_SIZE: i64 = 50;

/// The list's filters.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    group: Option<i64>,
    #[serde(default)]
    q: String,
    /// `subtree` (default) or `group`.
    #[serde(default)]
    scope: String,
    #[serde(default)]
    page: i64,
}

fn tree(groups: &[GroupNode], selected: Option<i64>, scope: &str) -> Markup {
    let mut children: HashMap<Option<i64>, Vec<&GroupNode>> = HashMap::new();
    for g in groups {
        children.entry(g.parent).or_default().push(g);
    }
    fn branch(
        parent: Option<i64>,
        children: &HashMap<Option<i64>, Vec<&GroupNode>>,
        selected: Option<i64>,
        scope: &str,
        depth: usize,
    ) -> Markup {
        let empty = Vec::new();
        let list = children.get(&parent).unwrap_or(&empty);
        html! {
            @if !list.is_empty() && depth < 32 {
                ul {
                    @for g in list {
                        li {
                            a href={ "/devices?group=" (g.id) "&scope=" (scope) } .active[selected == Some(g.id)] data-group=(g.name) { (g.name) }
                            (branch(Some(g.id), children, selected, scope, depth + 1))
                        }
                    }
                }
            }
        }
    }
    html! { nav.tree #group-tree { h3 { "Administration groups" } (branch(None, &children, selected, scope, 0)) } }
}

fn connection(c: &Console, d: &riposte_store::DeviceRow) -> Markup {
    if d.revoked {
        html! { span.badge.bad { "Revoked" } }
    } else if c.core().is_connected(d) {
        html! { span.badge.good { "Connected" } }
    } else {
        html! { span.badge { "Not connected" } }
    }
}

/// `GET /devices`: the group tree and one page of devices (offset/limit in the store).
pub async fn list(
    State(c): State<Console>,
    s: Session,
    Query(q): Query<ListQuery>,
) -> Result<Response, Reject> {
    let groups = c.core().groups(&s.caller).await?;
    let names: HashMap<i64, &str> = groups.iter().map(|g| (g.id, g.name.as_str())).collect();
    let scope = if q.scope == "group" {
        "group"
    } else {
        "subtree"
    };
    // The selected group and everything under it: the devices listed by default, and
    // the groups it cannot be moved into.
    let own_subtree = match q.group {
        Some(g) if names.contains_key(&g) => c
            .core()
            .store
            .group_tree()
            .await
            .map_err(|e| Reject::Internal(e.to_string()))?
            .subtree(g),
        Some(_) => return Err(Reject::NotFound("no such administration group".into())),
        None => Vec::new(),
    };
    let ids = q.group.map(|g| {
        if scope == "group" {
            vec![g]
        } else {
            own_subtree.clone()
        }
    });
    let page_no = q.page.clamp(0, 1_000_000);
    let search = q.q.trim();
    let mut rows = c
        .core()
        .store
        .devices(
            ids.as_deref(),
            (!search.is_empty()).then_some(search),
            page_no * PAGE_SIZE,
            PAGE_SIZE + 1,
        )
        .await
        .map_err(|e| Reject::Internal(e.to_string()))?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let link = |p: i64| {
        let mut u = format!("/devices?page={p}&scope={scope}");
        if let Some(g) = q.group {
            u.push_str(&format!("&group={g}"));
        }
        if !search.is_empty() {
            u.push_str("&q=");
            u.push_str(&urlencode(search));
        }
        u
    };
    let title = q
        .group
        .and_then(|g| names.get(&g).copied())
        .unwrap_or("All devices");
    let body = html! {
        h1 { "Managed devices" }
        div.split {
            div.side {
                (tree(&groups, q.group, scope))
                @if s.can(Operation::ChangeGroups) {
                    form.stacked #new-group method="post" action="/groups" {
                        (csrf(&s))
                        h3 { "New group" }
                        label for="new-group-name" { "Name" }
                        input type="text" name="name" #new-group-name required maxlength="128";
                        label for="new-group-parent" { "Inside" }
                        select name="parent" #new-group-parent {
                            @for g in &groups {
                                option value=(g.name) selected[q.group == Some(g.id)] { (g.name) }
                            }
                        }
                        button type="submit" #create-group { "Create group" }
                    }
                    @if let Some(g) = q.group.and_then(|g| groups.iter().find(|n| n.id == g)).filter(|g| g.parent.is_some()) {
                        div #change-group {
                            h3 { "This group: " (g.name) }
                            form.stacked #rename-group-form method="post" action="/groups/change" {
                                (csrf(&s))
                                input type="hidden" name="group" value=(g.name);
                                input type="hidden" name="action" value="rename";
                                label for="rename-group-name" { "New name" }
                                input type="text" name="name" #rename-group-name required maxlength="128" value=(g.name);
                                button type="submit" #rename-group { "Rename" }
                            }
                            form.stacked #move-group-form method="post" action="/groups/change" {
                                (csrf(&s))
                                input type="hidden" name="group" value=(g.name);
                                input type="hidden" name="action" value="move";
                                label for="move-group-parent" { "Move inside" }
                                select name="parent" #move-group-parent {
                                    @for other in groups.iter().filter(|o| !own_subtree.contains(&o.id)) {
                                        option value=(other.name) selected[Some(other.id) == g.parent] { (other.name) }
                                    }
                                }
                                button type="submit" #move-group { "Move" }
                            }
                            form.stacked #delete-group-form method="post" action="/groups/change" {
                                (csrf(&s))
                                input type="hidden" name="group" value=(g.name);
                                input type="hidden" name="action" value="delete";
                                label {
                                    input type="checkbox" name="confirm" value="yes" #delete-group-confirm required;
                                    " Delete this group and its policy (only once no device, subgroup or task refers to it)"
                                }
                                button type="submit" #delete-group { "Delete group" }
                            }
                        }
                    }
                }
            }
            section.list {
                h2 #list-title { (title) }
                form.filters method="get" action="/devices" {
                    @if let Some(g) = q.group { input type="hidden" name="group" value=(g); }
                    input type="search" name="q" #device-search value=(search) placeholder="Search by device or host name";
                    select name="scope" #device-scope {
                        option value="subtree" selected[scope == "subtree"] { "This group and its subgroups" }
                        option value="group" selected[scope == "group"] { "This group only" }
                    }
                    button type="submit" { "Filter" }
                }
                table.grid #devices {
                    thead { tr { th { "Device" } th { "Host name" } th { "Group" } th { "Connection" } th { "Last seen" } } }
                    tbody {
                        @for d in &rows {
                            tr {
                                td { a.device href={ "/devices/" (d.id) } { (d.name) } }
                                td { (d.hostname) }
                                td { (names.get(&d.group_id).copied().unwrap_or("?")) }
                                td { (connection(&c, d)) }
                                td { (fmt_time(d.last_seen)) }
                            }
                        }
                        @if rows.is_empty() { tr { td colspan="5" { "No devices match." } } }
                    }
                }
                nav.pager {
                    @if page_no > 0 { a #prev href=(link(page_no - 1)) { "← Previous" } }
                    span #range { "Devices " (page_no * PAGE_SIZE + i64::from(!rows.is_empty())) "–" (page_no * PAGE_SIZE + rows.len() as i64) }
                    @if more { a #next href=(link(page_no + 1)) { "Next →" } }
                }
            }
        }
    };
    Ok(page(&c, &s, "Managed devices", Nav::Devices, body))
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The tab query of device pages.
#[derive(Debug, Default, Deserialize)]
pub struct TabQuery {
    #[serde(default)]
    tab: String,
    #[serde(default)]
    section: String,
    #[serde(default)]
    dialog: String,
}

fn device_header(c: &Console, d: &riposte_store::DeviceRow, group: &str) -> Markup {
    html! {
        p.crumbs { a href="/devices" { "Managed devices" } " › " a href={ "/devices?group=" (d.group_id) } { (group) } " › " (d.name) }
        h1 #device-name { (d.name) " " (connection(c, d)) }
    }
}

/// `GET /devices/{id}`: a device's tabs.
pub async fn detail(
    State(c): State<Console>,
    s: Session,
    Path(id): Path<i64>,
    Query(q): Query<TabQuery>,
) -> Result<Response, Reject> {
    let (d, eff) = c.core().device_settings(&s.caller, &id.to_string()).await?;
    let groups = c.core().groups(&s.caller).await?;
    let group = groups
        .iter()
        .find(|g| g.id == d.group_id)
        .map(|g| g.name.clone())
        .unwrap_or_default();
    let tab = match q.tab.as_str() {
        "applications" | "settings" | "detections" | "quarantine" | "alerts" | "tasks" => {
            q.tab.as_str()
        }
        _ => "general",
    };
    let base = format!("/devices/{id}");
    let content = match tab {
        "applications" => html! {
            table.grid #applications {
                thead { tr { th { "Application" } th { "State" } } }
                tbody { tr {
                    td { a #app-riposte href={ "/devices/" (id) "/apps/riposte" } { "Riposte agent" } }
                    td { (connection(&c, &d)) }
                } }
            }
        },
        "settings" => html! {
            h2 { "Effective settings" }
            table.grid #effective {
                thead { tr { th { "Settings group" } th { "Value" } th { "Where it comes from" } } }
                tbody {
                    tr {
                        td { "Threat Response" }
                        td {
                            (if eff.threat_response.value.enabled { "On" } else { "Off" })
                            @for a in &eff.threat_response.value.actions { ", " code { (a.as_str()) } }
                        }
                        td { (lock_mark(&eff.threat_response.provenance)) (provenance_text(&eff.threat_response.provenance)) }
                    }
                    tr {
                        td { "Sandbox integration" }
                        td { (eff.sandbox_integration.value.sandboxes.len()) " sandbox server(s), " (eff.sandbox_integration.value.watch.len()) " watched folder(s)" }
                        td { (lock_mark(&eff.sandbox_integration.provenance)) (provenance_text(&eff.sandbox_integration.provenance)) }
                    }
                }
            }
        },
        "detections" => fleet::detections_table(
            &c.core()
                .detections(&s.caller, Some(&id.to_string()))
                .await?,
            None,
        ),
        "quarantine" => fleet::quarantine_table(
            &s,
            &c.core()
                .quarantine(&s.caller, Some(&id.to_string()))
                .await?,
            None,
            &if d.revoked {
                std::collections::HashSet::from([d.id])
            } else {
                Default::default()
            },
            &format!("{base}?tab=quarantine"),
        ),
        "alerts" => {
            let rows = c.core().alerts(&s.caller, Some(&id.to_string())).await?;
            html! {
                table.grid #device-alerts {
                    thead { tr { th { "Raised" } th { "Alert" } th { "Message" } } }
                    tbody {
                        @for a in &rows {
                            tr { td { (fmt_time(a.at)) } td { code { (a.code) } } td { (a.message) } }
                        }
                        @if rows.is_empty() { tr { td colspan="3" { "No alerts from this device." } } }
                    }
                }
            }
        }
        "tasks" => {
            let rows = c
                .core()
                .store
                .device_tasks(d.id)
                .await
                .map_err(|e| Reject::Internal(e.to_string()))?;
            html! {
                table.grid #device-tasks {
                    thead { tr { th { "Task" } th { "State" } th { "Hits" } th { "Reason" } th { "Updated" } } }
                    tbody {
                        @for t in &rows {
                            tr { td { a href={ "/tasks/" (t.task_id) } { "Task " (t.task_id) } } td { (t.state.as_str()) } td { (t.hits) } td { (t.reason.clone().unwrap_or_default()) } td { (fmt_time(t.updated_at)) } }
                        }
                        @if rows.is_empty() { tr { td colspan="5" { "No tasks on this device." } } }
                    }
                }
            }
        }
        _ => html! {
            dl.facts #device-facts {
                dt { "Device id" } dd { (d.id) }
                dt { "Host name" } dd { (d.hostname) }
                dt { "Administration group" } dd { (group) }
                dt { "Connection" } dd #connection { (connection(&c, &d)) }
                dt { "Enrolled" } dd { (fmt_time(d.enrolled_at)) }
                dt { "Last seen" } dd { (fmt_time(d.last_seen)) }
                dt { "Certificate (SHA-256)" } dd { code { (d.cert_fingerprint) } }
                // Renewed over the channel a third of its life before this; a device
                // away longer must be enrolled again.
                dt { "Certificate valid until" } dd #cert-expiry {
                    @match d.cert_expires_ms {
                        Some(at) => (fmt_time(at)),
                        None => "not known yet (it is read when the device next connects)",
                    }
                }
            }
            @if !d.revoked && s.can(Operation::MoveDevice) {
                form.inline #move-form method="post" action={ "/devices/" (id) "/move" } {
                    (csrf(&s))
                    label for="move-group" { "Move to group " }
                    select name="group" #move-group {
                        @for g in &groups {
                            option value=(g.name) selected[g.id == d.group_id] { (g.name) }
                        }
                    }
                    button type="submit" #move-device { "Move" }
                }
            }
            @if !d.revoked && s.can(Operation::RevokeDevice) {
                form.inline #revoke-form method="post" action={ "/devices/" (id) "/revoke" } {
                    (csrf(&s))
                    label {
                        input type="checkbox" name="confirm" value="yes" #revoke-confirm required;
                        " Stop managing this device: its certificate is refused from now on, and it must enroll again to return"
                    }
                    button type="submit" #revoke-device { "Revoke the device" }
                }
            }
        },
    };
    let body = html! {
        (device_header(&c, &d, &group))
        (tabs(&base, tab, &[("general", "General"), ("applications", "Applications"), ("settings", "Effective settings"), ("detections", "Detections"), ("quarantine", "Quarantine"), ("alerts", "Alerts"), ("tasks", "Tasks")]))
        div.tab-body { (content) }
    };
    Ok(page(&c, &s, &d.name, Nav::Devices, body))
}

fn lock_mark(p: &Provenance) -> Markup {
    html! { @if p.is_locked() { span.lock { "Locked · " } } }
}

/// `GET /devices/{id}/apps/riposte`: the *Riposte agent* application, with its
/// **Application settings** tab.
pub async fn app(
    State(c): State<Console>,
    s: Session,
    Path(id): Path<i64>,
    Query(q): Query<TabQuery>,
) -> Result<Response, Reject> {
    let (d, eff) = c.core().device_settings(&s.caller, &id.to_string()).await?;
    let group = c
        .core()
        .store
        .group(d.group_id)
        .await
        .map(|g| g.name)
        .unwrap_or_default();
    let base = format!("/devices/{id}/apps/riposte");
    let tab = if q.tab == "settings" {
        "settings"
    } else {
        "general"
    };
    let section = q.section.as_str();
    let content = if tab == "settings" {
        let here = format!("{base}?tab=settings&section=threat-response");
        let inner = match section {
            "threat-response" => {
                let special = c.core().special_status(&s.caller).await?;
                let tr = &eff.threat_response;
                let locked_by = match &tr.provenance {
                    Provenance::Policy {
                        policy,
                        locked: true,
                        ..
                    } => Some(policy.clone()),
                    _ => None,
                };
                let full = c.core().effective_for(&d).await?;
                // A value of the device's own can be given back to its policies.
                let own_value = matches!(tr.provenance, Provenance::Local)
                    && s.can(Operation::ChangeDeviceSettings);
                let follow = html! {
                    @if own_value {
                        form.inline method="post" action={ "/devices/" (id) "/threat-response/follow-policy" } {
                            (crate::layout::csrf(&s))
                            button type="submit" #follow-policy title="Remove this device's own value: its policies decide again" { "Follow the policies" }
                        }
                    }
                };
                let section = settings::threat_response(&TrSection {
                    session: &s,
                    action: format!("/devices/{id}/threat-response"),
                    here,
                    value: tr.value.clone(),
                    password_set: full.threat_response.value.special_password.is_some(),
                    mode: None,
                    locked_by,
                    provenance: Some(provenance_text(&tr.provenance)),
                    special_exists: special.is_some(),
                    can_edit: s.can(Operation::ChangeDeviceSettings),
                    can_special: s.can(Operation::ManageSpecialAccount),
                    dialog: q.dialog == "special",
                    unsaved: false,
                });
                html! { (section) (follow) }
            }
            "sandbox" => html! {
                (settings::sandbox(&s, &eff.sandbox_integration.value, None, None, Some(&eff.sandbox_integration.provenance)))
                p { "Sub-sections: " a href={ (base) "?tab=settings&section=threat-response" } { "Threat Response" } }
            },
            _ => html! { p.hint { "Choose a section." } },
        };
        html! {
            div.split {
                (settings::section_nav(&format!("{base}?tab=settings"), section))
                div.section-body { (inner) }
            }
        }
    } else {
        html! {
            dl.facts {
                dt { "Application" } dd { "Riposte agent" }
                dt { "State" } dd { (connection(&c, &d)) }
                dt { "Last seen" } dd { (fmt_time(d.last_seen)) }
            }
        }
    };
    let body = html! {
        (device_header(&c, &d, &group))
        p.crumbs { a href={ "/devices/" (id) "?tab=applications" } { "Applications" } " › Riposte agent" }
        h2 { "Riposte agent" }
        (tabs(&base, tab, &[("general", "General"), ("settings", "Application settings")]))
        div.tab-body { (content) }
    };
    Ok(page(
        &c,
        &s,
        &format!("{} — Riposte agent", d.name),
        Nav::Devices,
        body,
    ))
}

/// `POST /devices/{id}/threat-response`: **OK** applies the section to the device.
pub async fn set_threat_response(
    State(c): State<Console>,
    Path(id): Path<i64>,
    p: Posted,
) -> Response {
    let back = format!("/devices/{id}/apps/riposte?tab=settings&section=threat-response");
    let res = async {
        let patch = settings::read_patch(&p.fields, false)?;
        // The form always carries every value, so an unchanged OK on a device that
        // follows its policies would silently cut it off them: later policy changes
        // would no longer reach it. Only a change gives it a value of its own.
        let (_, eff) = c
            .core()
            .device_settings(&p.session.caller, &id.to_string())
            .await?;
        let tr = &eff.threat_response;
        let unchanged = patch.enabled == Some(tr.value.enabled)
            && patch
                .actions
                .as_ref()
                .map(|a| a.iter().copied().collect::<std::collections::BTreeSet<_>>())
                == Some(tr.value.actions.clone())
            && patch.special_password.is_none();
        if unchanged && !matches!(tr.provenance, Provenance::Local) {
            return Ok(
                "Nothing changed: the device still follows its policies for Threat Response."
                    .to_string(),
            );
        }
        c.core()
            .set_device_threat_response(&p.session.caller, &id.to_string(), &patch)
            .await?;
        Ok("Threat Response applied to the device; it receives the new settings now.".to_string())
    }
    .await;
    after(&c, &p.session, res, &back)
}

/// `POST /devices/{id}/threat-response/follow-policy`: the device's own Threat
/// Response value goes; its policies decide again.
pub async fn follow_policy(State(c): State<Console>, Path(id): Path<i64>, p: Posted) -> Response {
    let back = format!("/devices/{id}/apps/riposte?tab=settings&section=threat-response");
    let res = c
        .core()
        .clear_device_threat_response(&p.session.caller, &id.to_string())
        .await
        .map(|(had, _)| {
            if had {
                "The device follows its policies for Threat Response again; it receives the settings now.".to_string()
            } else {
                "The device had no Threat Response value of its own.".to_string()
            }
        });
    after(&c, &p.session, res, &back)
}

/// `POST /groups`: a new administration group inside another.
pub async fn create_group(State(c): State<Console>, p: Posted) -> Response {
    let name = p.fields.text("name");
    let parent = p.fields.text("parent");
    let parent = (!parent.is_empty()).then_some(parent.as_str());
    match c
        .core()
        .create_group(&p.session.caller, &name, parent)
        .await
    {
        Ok(id) => after(
            &c,
            &p.session,
            Ok(format!("Group '{name}' created.")),
            &format!("/devices?group={id}"),
        ),
        Err(e) => after(&c, &p.session, Err(e), "/devices"),
    }
}

/// `POST /groups/change`: rename, move or delete the group named `group`.
pub async fn change_group(State(c): State<Console>, p: Posted) -> Response {
    let f = &p.fields;
    let group = f.text("group");
    let core = c.core();
    let caller = &p.session.caller;
    let (res, back) = match f.text("action").as_str() {
        "rename" => {
            let name = f.text("name");
            let res = core.rename_group(caller, &group, &name).await;
            // Back to the group under its new name, or under its old one where refused
            // (the name asked for may be another group's).
            let back = if res.is_ok() {
                name.clone()
            } else {
                group.clone()
            };
            (
                res.map(|()| format!("Group '{group}' renamed to '{}'.", name.trim())),
                back,
            )
        }
        "move" => {
            let parent = f.text("parent");
            let res = core.move_group(caller, &group, &parent).await;
            (
                res.map(|()| format!("Group '{group}' moved inside '{parent}'.")),
                group.clone(),
            )
        }
        "delete" if f.text("confirm") == "yes" => {
            let res = core.delete_group(caller, &group).await;
            let back = if res.is_ok() {
                String::new()
            } else {
                group.clone()
            };
            (res.map(|()| format!("Group '{group}' deleted.")), back)
        }
        "delete" => (
            Err(riposte_server::ServiceError::BadRequest(
                "tick the box to confirm the deletion".into(),
            )),
            group.clone(),
        ),
        other => (
            Err(riposte_server::ServiceError::BadRequest(format!(
                "unknown group change '{other}'"
            ))),
            group.clone(),
        ),
    };
    // Back to the group, under whatever name it has now.
    let back = match core.store.group_by_name(back.trim()).await {
        Ok(g) => format!("/devices?group={}", g.id),
        Err(_) => "/devices".to_string(),
    };
    after(&c, &p.session, res, &back)
}

/// `POST /devices/{id}/move`: into another group; its settings follow at once.
pub async fn move_device(State(c): State<Console>, Path(id): Path<i64>, p: Posted) -> Response {
    let group = p.fields.text("group");
    let res = c
        .core()
        .move_device(&p.session.caller, &id.to_string(), &group)
        .await
        .map(|()| format!("Device moved to '{group}'; its new settings are sent now."));
    after(&c, &p.session, res, &format!("/devices/{id}"))
}

/// `POST /devices/{id}/revoke`: only with the confirmation box ticked.
pub async fn revoke_device(State(c): State<Console>, Path(id): Path<i64>, p: Posted) -> Response {
    let res = if p.fields.get("confirm") != Some("yes") {
        Err(riposte_server::error::ServiceError::BadRequest(
            "tick the box to confirm the revocation".into(),
        ))
    } else {
        c.core()
            .revoke_device(&p.session.caller, &id.to_string())
            .await
            .map(|listed| {
                if listed {
                    "Device revoked: its connection is closed and refused from now on, and sandboxes refuse it within a minute.".into()
                } else {
                    "Device revoked: its connection is closed and refused from now on. It was enrolled by an older server, so sandboxes can refuse it only once it has connected again.".into()
                }
            })
    };
    after(&c, &p.session, res, &format!("/devices/{id}"))
}
