//! Policies, settings groups and a device's effective settings.
//!
//! Settings come in *settings groups* (Threat Response, Sandbox integration). A group's
//! policy holds a value for a settings group together with a switch, *Undefined* or
//! *Enforce*. A device may have local values. [`effective_settings`] decides, per settings
//! group, which value applies and records why ([`Provenance`]), so that the console and
//! `riposte admin device settings` can explain every value.
//!
//! The rule, per settings group, over the path root → device's group:
//! 1. the top-most policy that *enforces* it wins (a parent's lock beats a child's);
//! 2. otherwise the device's local value, if it has one;
//! 3. otherwise the nearest policy that holds a value;
//! 4. otherwise the product default.

use crate::groups::GroupId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A policy's switch for one settings group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// The policy proposes a value; a device's local value overrides it.
    #[default]
    Undefined,
    /// The policy imposes its value; devices and child policies cannot override it.
    Enforce,
}

/// A settings group's value inside a policy, with its switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySection<T> {
    pub mode: PolicyMode,
    pub value: T,
}

/// The names of the settings groups, as used in the API and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingsGroup {
    ThreatResponse,
    SandboxIntegration,
}

/// A response action that Threat Response can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Local: copy the object into quarantine, then delete it.
    QuarantineAndDelete,
    /// Local: tell the device user, when the detected account has a session.
    NotifyUser,
    /// Local: ask the EPP to scan kernel, startup objects and boot sectors.
    EppCriticalAreasScan,
    /// Group: run an IOC scan for the threat on every device of the group.
    GroupIocScan,
    /// Group: quarantine and delete where the IOC is found.
    GroupIocQuarantineAndDelete,
    /// Group: run the EPP critical-areas scan where the IOC is found.
    GroupIocEppCriticalAreasScan,
}

impl Action {
    /// Every action, local ones first.
    pub const ALL: [Action; 6] = [
        Action::QuarantineAndDelete,
        Action::NotifyUser,
        Action::EppCriticalAreasScan,
        Action::GroupIocScan,
        Action::GroupIocQuarantineAndDelete,
        Action::GroupIocEppCriticalAreasScan,
    ];

    /// Whether the action runs across the administration group (needs the special account).
    pub fn is_group(self) -> bool {
        matches!(
            self,
            Action::GroupIocScan
                | Action::GroupIocQuarantineAndDelete
                | Action::GroupIocEppCriticalAreasScan
        )
    }

    /// The action's name as written in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::QuarantineAndDelete => "quarantine_and_delete",
            Action::NotifyUser => "notify_user",
            Action::EppCriticalAreasScan => "epp_critical_areas_scan",
            Action::GroupIocScan => "group_ioc_scan",
            Action::GroupIocQuarantineAndDelete => "group_ioc_quarantine_and_delete",
            Action::GroupIocEppCriticalAreasScan => "group_ioc_epp_critical_areas_scan",
        }
    }

    /// Parses an action name; the error lists the valid names.
    pub fn parse(name: &str) -> Result<Action, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == name.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "unknown action '{name}'; valid actions: {}",
                    names.join(", ")
                )
            })
    }
}

/// The Threat Response settings group. `Debug` shows whether the special password is
/// set, never the password (sealed or not): debug output ends up in logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreatResponse {
    /// "Take response actions on threats detected by the sandbox".
    pub enabled: bool,
    /// The selected actions.
    pub actions: BTreeSet<Action>,
    /// The special account's password for authentication on the administration server,
    /// sealed (encrypted) by the server. Never the clear text outside the server's memory
    /// and the agent's channel; never returned by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub special_password: Option<String>,
}

impl std::fmt::Debug for ThreatResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreatResponse")
            .field("enabled", &self.enabled)
            .field("actions", &self.actions)
            .field(
                "special_password",
                &self.special_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for ThreatResponse {
    fn default() -> Self {
        ThreatResponse {
            enabled: false,
            actions: [Action::QuarantineAndDelete, Action::NotifyUser]
                .into_iter()
                .collect(),
            special_password: None,
        }
    }
}

impl ThreatResponse {
    /// Group actions need the special account's password; local ones do not.
    pub fn needs_special_password(&self) -> bool {
        self.actions.iter().any(|a| a.is_group())
    }

    /// The same settings without the secret, for display.
    pub fn redacted(&self) -> ThreatResponse {
        ThreatResponse {
            special_password: None,
            ..self.clone()
        }
    }
}

/// The Sandbox integration settings group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxIntegration {
    /// Sandbox server URLs, tried in order (failover).
    #[serde(default)]
    pub sandboxes: Vec<String>,
    /// PEM certificate pinned for the sandbox servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_ca_pem: Option<String>,
    /// Folders watched for new and executed objects (device paths).
    #[serde(default)]
    pub watch: Vec<String>,
    /// Per-request timeout towards a sandbox.
    pub request_timeout_secs: u64,
}

impl Default for SandboxIntegration {
    fn default() -> Self {
        SandboxIntegration {
            sandboxes: Vec::new(),
            sandbox_ca_pem: None,
            watch: Vec::new(),
            request_timeout_secs: 30,
        }
    }
}

/// What one group's policy holds. A settings group absent here is not in the policy at all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_response: Option<PolicySection<ThreatResponse>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_integration: Option<PolicySection<SandboxIntegration>>,
}

/// A device's own (local) values; a settings group absent here has no local value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocalSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_response: Option<ThreatResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_integration: Option<SandboxIntegration>,
}

/// Where an effective value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Provenance {
    /// From the policy of `group_id`; `locked` when that policy enforces it.
    Policy {
        group_id: GroupId,
        policy: String,
        locked: bool,
    },
    /// The device's local value.
    Local,
    /// No policy and no local value: the product default.
    Default,
}

impl Provenance {
    /// Whether a device cannot change this value.
    pub fn is_locked(&self) -> bool {
        matches!(self, Provenance::Policy { locked: true, .. })
    }

    /// Where the value comes from, in words for a command's text output.
    pub fn describe(&self) -> String {
        match self {
            Provenance::Policy {
                policy,
                locked: true,
                ..
            } => format!("{policy} (enforced, locked)"),
            Provenance::Policy { policy, .. } => format!("{policy} (not enforced)"),
            Provenance::Local => "local device setting".into(),
            Provenance::Default => "product default".into(),
        }
    }
}

/// A value and why it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveValue<T> {
    pub value: T,
    pub provenance: Provenance,
}

/// The effective settings of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveSettings {
    pub threat_response: EffectiveValue<ThreatResponse>,
    pub sandbox_integration: EffectiveValue<SandboxIntegration>,
}

impl EffectiveSettings {
    /// The same settings without secrets, for display and the API.
    pub fn redacted(&self) -> EffectiveSettings {
        let mut out = self.clone();
        out.threat_response.value = out.threat_response.value.redacted();
        out
    }

    /// The group whose devices an autonomous task from this device covers: the group of the
    /// policy that supplied Threat Response, or the device's own group for local settings.
    pub fn response_group(&self, device_group: GroupId) -> GroupId {
        match self.threat_response.provenance {
            Provenance::Policy { group_id, .. } => group_id,
            Provenance::Local | Provenance::Default => device_group,
        }
    }
}

/// One group on the path from the root to the device's group, with its policy if any.
#[derive(Debug, Clone)]
pub struct PathPolicy<'a> {
    pub group_id: GroupId,
    /// The policy's display name.
    pub policy_name: &'a str,
    pub settings: Option<&'a PolicySettings>,
}

fn resolve<T: Clone + Default>(
    path: &[PathPolicy<'_>],
    section: impl Fn(&PolicySettings) -> Option<&PolicySection<T>>,
    local: Option<&T>,
) -> EffectiveValue<T> {
    let with_section = || {
        path.iter()
            .filter_map(|p| p.settings.and_then(&section).map(|s| (p, s)))
    };
    if let Some((p, s)) = with_section().find(|(_, s)| s.mode == PolicyMode::Enforce) {
        return EffectiveValue {
            value: s.value.clone(),
            provenance: Provenance::Policy {
                group_id: p.group_id,
                policy: p.policy_name.to_string(),
                locked: true,
            },
        };
    }
    if let Some(v) = local {
        return EffectiveValue {
            value: v.clone(),
            provenance: Provenance::Local,
        };
    }
    if let Some((p, s)) = with_section().last() {
        return EffectiveValue {
            value: s.value.clone(),
            provenance: Provenance::Policy {
                group_id: p.group_id,
                policy: p.policy_name.to_string(),
                locked: false,
            },
        };
    }
    EffectiveValue {
        value: T::default(),
        provenance: Provenance::Default,
    }
}

/// Computes a device's effective settings from the policies on the path root → device's
/// group (in that order) and the device's local values. A pure function: the same inputs
/// always give the same settings (invariant 2 in ARCHITECTURE.md).
pub fn effective_settings(path: &[PathPolicy<'_>], local: &LocalSettings) -> EffectiveSettings {
    EffectiveSettings {
        threat_response: resolve(
            path,
            |p| p.threat_response.as_ref(),
            local.threat_response.as_ref(),
        ),
        sandbox_integration: resolve(
            path,
            |p| p.sandbox_integration.as_ref(),
            local.sandbox_integration.as_ref(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(enabled: bool, actions: &[Action]) -> ThreatResponse {
        ThreatResponse {
            enabled,
            actions: actions.iter().copied().collect(),
            special_password: None,
        }
    }

    fn policy(mode: PolicyMode, value: ThreatResponse) -> PolicySettings {
        PolicySettings {
            threat_response: Some(PolicySection { mode, value }),
            sandbox_integration: None,
        }
    }

    use Action::*;
    use PolicyMode::*;

    /// One row: the policies on root (1), parent (2) and child (3) groups, the device's local
    /// value, and what must come out.
    struct Row {
        name: &'static str,
        root: Option<PolicySettings>,
        parent: Option<PolicySettings>,
        child: Option<PolicySettings>,
        local: Option<ThreatResponse>,
        want_value: ThreatResponse,
        want: Provenance,
    }

    fn locked(group_id: GroupId, policy: &str) -> Provenance {
        Provenance::Policy {
            group_id,
            policy: policy.into(),
            locked: true,
        }
    }
    fn unlocked(group_id: GroupId, policy: &str) -> Provenance {
        Provenance::Policy {
            group_id,
            policy: policy.into(),
            locked: false,
        }
    }

    #[test]
    fn effective_settings_over_three_levels() {
        let a = tr(true, &[QuarantineAndDelete]);
        let b = tr(true, &[NotifyUser, GroupIocScan]);
        let c = tr(false, &[EppCriticalAreasScan]);
        let l = tr(true, &[GroupIocQuarantineAndDelete]);
        let rows = vec![
            Row {
                name: "nothing anywhere: default",
                root: None,
                parent: None,
                child: None,
                local: None,
                want_value: ThreatResponse::default(),
                want: Provenance::Default,
            },
            Row {
                name: "local only",
                root: None,
                parent: None,
                child: None,
                local: Some(l.clone()),
                want_value: l.clone(),
                want: Provenance::Local,
            },
            Row {
                name: "parent enforce beats child enforce",
                root: None,
                parent: Some(policy(Enforce, a.clone())),
                child: Some(policy(Enforce, b.clone())),
                local: Some(l.clone()),
                want_value: a.clone(),
                want: locked(2, "P"),
            },
            Row {
                name: "root enforce beats everything",
                root: Some(policy(Enforce, c.clone())),
                parent: Some(policy(Enforce, a.clone())),
                child: Some(policy(Undefined, b.clone())),
                local: Some(l.clone()),
                want_value: c.clone(),
                want: locked(1, "R"),
            },
            Row {
                name: "child enforce beats local",
                root: Some(policy(Undefined, c.clone())),
                parent: None,
                child: Some(policy(Enforce, b.clone())),
                local: Some(l.clone()),
                want_value: b.clone(),
                want: locked(3, "C"),
            },
            Row {
                name: "local beats undefined policies",
                root: Some(policy(Undefined, c.clone())),
                parent: Some(policy(Undefined, a.clone())),
                child: None,
                local: Some(l.clone()),
                want_value: l.clone(),
                want: Provenance::Local,
            },
            Row {
                name: "nearest undefined policy without local",
                root: Some(policy(Undefined, c.clone())),
                parent: Some(policy(Undefined, a.clone())),
                child: None,
                local: None,
                want_value: a.clone(),
                want: unlocked(2, "P"),
            },
            Row {
                name: "child undefined is nearest",
                root: Some(policy(Undefined, c.clone())),
                parent: Some(policy(Undefined, a.clone())),
                child: Some(policy(Undefined, b.clone())),
                local: None,
                want_value: b.clone(),
                want: unlocked(3, "C"),
            },
            Row {
                name: "policy without the section is skipped",
                root: Some(policy(Undefined, c.clone())),
                parent: Some(PolicySettings::default()),
                child: Some(PolicySettings::default()),
                local: None,
                want_value: c.clone(),
                want: unlocked(1, "R"),
            },
            Row {
                name: "enforce below undefined still locks",
                root: Some(policy(Undefined, c.clone())),
                parent: Some(policy(Enforce, a.clone())),
                child: Some(policy(Undefined, b.clone())),
                local: None,
                want_value: a.clone(),
                want: locked(2, "P"),
            },
        ];
        for row in rows {
            let path = [
                PathPolicy {
                    group_id: 1,
                    policy_name: "R",
                    settings: row.root.as_ref(),
                },
                PathPolicy {
                    group_id: 2,
                    policy_name: "P",
                    settings: row.parent.as_ref(),
                },
                PathPolicy {
                    group_id: 3,
                    policy_name: "C",
                    settings: row.child.as_ref(),
                },
            ];
            let local = LocalSettings {
                threat_response: row.local.clone(),
                sandbox_integration: None,
            };
            let eff = effective_settings(&path, &local);
            assert_eq!(
                eff.threat_response.value, row.want_value,
                "value in row '{}'",
                row.name
            );
            assert_eq!(
                eff.threat_response.provenance, row.want,
                "provenance in row '{}'",
                row.name
            );
            // The other settings group is independent: nothing set, so default.
            assert_eq!(
                eff.sandbox_integration.provenance,
                Provenance::Default,
                "row '{}'",
                row.name
            );
            assert_eq!(
                eff.response_group(3),
                match row.want {
                    Provenance::Policy { group_id, .. } => group_id,
                    _ => 3,
                }
            );
        }
    }

    #[test]
    fn actions_parse_and_classify() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Ok(a));
        }
        let err = Action::parse("nuke").unwrap_err();
        assert!(err.contains("quarantine_and_delete"), "{err}");
        assert!(!tr(true, &[QuarantineAndDelete, NotifyUser]).needs_special_password());
        assert!(tr(true, &[GroupIocEppCriticalAreasScan]).needs_special_password());
    }

    #[test]
    fn redaction_drops_the_secret() {
        let mut t = tr(true, &[GroupIocScan]);
        t.special_password = Some("sealed".into());
        assert_eq!(t.redacted().special_password, None);
        let json = serde_json::to_string(&t.redacted()).unwrap();
        assert!(!json.contains("special_password"));
    }
}
