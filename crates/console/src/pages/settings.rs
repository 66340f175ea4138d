//! The **Sandbox integration → Threat Response** section, shared by a policy's and a
//! device's **Application settings**, and the special-user dialog.

use crate::layout::{action_label, csrf, provenance_text};
use crate::web::{Fields, Session};
use maud::{html, Markup};
use riposte_model::{Action, PolicyMode, SandboxIntegration, ThreatResponse};
use riposte_server::service::ThreatResponsePatch;
use riposte_server::ServiceError;

/// Everything the Threat Response section shows.
pub struct TrSection<'a> {
    pub session: &'a Session,
    /// Where the form posts.
    pub action: String,
    /// This section's own page (to come back to).
    pub here: String,
    pub value: ThreatResponse,
    /// Whether a special password is stored with these settings.
    pub password_set: bool,
    /// In a policy: the section's switch.
    pub mode: Option<PolicyMode>,
    /// In a device: the policy that enforces these values, if one does.
    pub locked_by: Option<String>,
    /// In a device: where the values come from.
    pub provenance: Option<String>,
    /// Whether the special account exists.
    pub special_exists: bool,
    pub can_edit: bool,
    pub can_special: bool,
    /// Whether the special-user dialog is open.
    pub dialog: bool,
    /// A policy edit kept by OK and not saved yet.
    pub unsaved: bool,
}

/// The Undefined / Enforce switch of a settings group, in its upper right corner.
pub fn mode_switch(name: &str, mode: PolicyMode, enabled: bool) -> Markup {
    html! {
        fieldset.mode-switch data-mode=(if mode == PolicyMode::Enforce { "enforce" } else { "undefined" }) {
            legend.sr { "Policy switch" }
            label {
                input type="radio" name=(name) value="undefined" id={ (name) "-undefined" }
                    checked[mode == PolicyMode::Undefined] disabled[!enabled];
                " Undefined"
            }
            label {
                input type="radio" name=(name) value="enforce" id={ (name) "-enforce" }
                    checked[mode == PolicyMode::Enforce] disabled[!enabled];
                " Enforce"
            }
        }
    }
}

/// The section.
pub fn threat_response(v: &TrSection<'_>) -> Markup {
    let locked = v.locked_by.is_some();
    let editable = v.can_edit && !locked;
    let is_policy = v.mode.is_some();
    html! {
        @if v.dialog && v.can_special && !v.special_exists {
            (special_dialog(v.session, &v.here))
        }
        form.settings method="post" action=(v.action) #threat-response-form {
            (csrf(v.session))
            section.settings-group #threat-response {
                header.group-head {
                    h3 { "Threat Response" }
                    @if let Some(mode) = v.mode {
                        (mode_switch("mode", mode, editable))
                    }
                    @if let Some(policy) = &v.locked_by {
                        span.lock #lock title="This value is enforced by a policy" {
                            "Locked · Enforced by policy " strong #lock-policy { (policy) }
                        }
                    }
                }
                @if let Some(p) = &v.provenance {
                    p.provenance #provenance { (p) }
                }
                @if v.unsaved {
                    p.flash.warn #unsaved { "This section has changes that are not saved yet: press Save to store the policy." }
                }
                label.check {
                    input type="checkbox" name="enabled" value="1" #tr-enabled
                        checked[v.value.enabled] disabled[!editable];
                    " Take response actions on threats detected by the sandbox"
                }
                fieldset.actions #selected-actions {
                    legend { "Selected actions" }
                    h4 { "On the device" }
                    @for a in Action::ALL.iter().filter(|a| !a.is_group()) {
                        (action_box(*a, &v.value, editable))
                    }
                    h4 { "In the administration group" }
                    @for a in Action::ALL.iter().filter(|a| a.is_group()) {
                        (action_box(*a, &v.value, editable))
                    }
                }
                p.warning #delete-warning role="note" {
                    "⚠ Warning: the actions “Move the object to quarantine and delete it” (on the device and where the IOC is found) delete the object from the device. A copy is kept in the device's quarantine, from where it can be restored."
                }
                fieldset.settings-group.auth #auth-group {
                    legend { "Authentication on administration server" }
                    p.hint { "Group actions create an IOC scan task on the administration server as the special user; the devices need its password." }
                    @if v.special_exists {
                        button type="button" #create-special disabled { "Create the administration server special user" }
                        p.hint #special-exists {
                            "The special user already exists on this server, so it cannot be created again. Its password can never be changed: to use another one, delete the special user on the Accounts page and create it again."
                        }
                    } @else if v.can_special {
                        a.button #create-special href={ (v.here) "&dialog=special" } { "Create the administration server special user" }
                    } @else {
                        p.hint #special-missing { "The special user does not exist yet; an administrator can create it." }
                    }
                    label {
                        "Administration server password"
                        input type="password" name="special_password" #special-password autocomplete="off"
                            maxlength="64" disabled[!editable]
                            placeholder=(if v.password_set { "•••••••• (set; leave empty to keep)" } else { "not set" });
                    }
                }
                @if editable {
                    div.buttons {
                        button type="submit" name="op" value="ok" #ok { "OK" }
                        @if is_policy {
                            button type="submit" name="op" value="save" #save.primary { "Save" }
                        }
                    }
                }
            }
        }
    }
}

fn action_box(a: Action, v: &ThreatResponse, editable: bool) -> Markup {
    html! {
        label.check {
            input type="checkbox" name="action" value=(a.as_str()) id={ "action-" (a.as_str()) }
                checked[v.actions.contains(&a)] disabled[!editable];
            " " (action_label(a)) " " code.name { (a.as_str()) }
        }
    }
}

/// The dialog that creates the special user.
pub fn special_dialog(s: &Session, back: &str) -> Markup {
    let cancel = back.to_string();
    html! {
        section.dialog #special-dialog role="dialog" aria-labelledby="special-dialog-title" {
            h3 #special-dialog-title { "Create the administration server special user" }
            p { "The special user may do one thing only: create an autonomous IOC scan task. Its password is 8 to 16 characters long and can never be changed afterwards." }
            form method="post" action="/special-account" {
                (csrf(s))
                input type="hidden" name="back" value=(back);
                label {
                    "Password"
                    input type="password" name="password" #special-new-password autocomplete="new-password"
                        data-length-check="8-16" data-hint="special-password-hint" data-submit="create-user";
                }
                p.hint #special-password-hint aria-live="polite" { "8 to 16 characters." }
                div.buttons {
                    button type="submit" #create-user.primary { "Create the user" }
                    a.button href=(cancel) { "Cancel" }
                }
            }
        }
    }
}

/// Reads the Threat Response fields of a posted form.
pub fn read_patch(f: &Fields, policy: bool) -> Result<ThreatResponsePatch, ServiceError> {
    let actions = f
        .all("action")
        .into_iter()
        .map(Action::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServiceError::BadRequest)?;
    let mode = if policy {
        Some(parse_mode(f.get("mode"))?)
    } else {
        None
    };
    let password = f.get("special_password").unwrap_or_default();
    Ok(ThreatResponsePatch {
        mode,
        enabled: Some(f.has("enabled")),
        actions: Some(actions),
        special_password: (!password.is_empty()).then(|| password.to_string()),
    })
}

/// Reads a policy switch; absent means Undefined.
pub fn parse_mode(v: Option<&str>) -> Result<PolicyMode, ServiceError> {
    match v.unwrap_or("undefined") {
        "undefined" => Ok(PolicyMode::Undefined),
        "enforce" => Ok(PolicyMode::Enforce),
        other => Err(ServiceError::BadRequest(format!(
            "unknown policy switch '{other}'; use undefined or enforce"
        ))),
    }
}

/// Applies a kept edit to values for display.
pub fn with_draft(
    mut value: ThreatResponse,
    mut mode: PolicyMode,
    d: &ThreatResponsePatch,
) -> (ThreatResponse, PolicyMode) {
    if let Some(e) = d.enabled {
        value.enabled = e;
    }
    if let Some(a) = &d.actions {
        value.actions = a.iter().copied().collect();
    }
    if let Some(m) = d.mode {
        mode = m;
    }
    (value, mode)
}

/// The Sandbox integration values (read-only summary or a policy's form).
pub fn sandbox(
    s: &Session,
    v: &SandboxIntegration,
    mode: Option<PolicyMode>,
    action: Option<&str>,
    provenance: Option<&riposte_model::Provenance>,
) -> Markup {
    let editable = action.is_some();
    html! {
        form.settings method="post" action=(action.unwrap_or("")) #sandbox-form {
            (csrf(s))
            section.settings-group #sandbox-integration {
                header.group-head {
                    h3 { "Sandbox integration" }
                    @if let Some(m) = mode { (mode_switch("mode", m, editable)) }
                    @if let Some(p) = provenance {
                        @if p.is_locked() { span.lock { "Locked · " (provenance_text(p)) } }
                    }
                }
                @if let Some(p) = provenance { p.provenance { (provenance_text(p)) } }
                label { "Sandbox servers (one https:// URL a line, tried in order)"
                    textarea name="sandboxes" rows="3" disabled[!editable] { (v.sandboxes.join("\n")) } }
                label { "Watched folders (one absolute path a line)"
                    textarea name="watch" rows="3" disabled[!editable] { (v.watch.join("\n")) } }
                label { "Request timeout (seconds)"
                    input type="number" name="timeout" min="1" max="3600" value=(v.request_timeout_secs) disabled[!editable]; }
                p.hint { "Sandbox certificate: " (if v.sandbox_ca_pem.is_some() { "pinned" } else { "none" }) }
                @if editable {
                    div.buttons { button type="submit" #sandbox-save.primary { "Save" } }
                }
            }
        }
    }
}

/// The sub-sections of **Sandbox integration**, as links.
pub fn section_nav(base: &str, current: &str) -> Markup {
    html! {
        nav.sections {
            ul {
                li {
                    a #section-sandbox href={ (base) "&section=sandbox" } .active[current == "sandbox"] { "Sandbox integration" }
                    ul {
                        li { a #section-threat-response href={ (base) "&section=threat-response" } .active[current == "threat-response"] { "Threat Response" } }
                    }
                }
            }
        }
    }
}
