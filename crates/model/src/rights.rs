//! Who may do what: every API operation, and the one function that decides.
//!
//! All authorisation goes through [`authorize`]. In particular, the special account's
//! single right (creating an autonomous IOC scan task) is enforced here and nowhere else
//! (invariant 3 in ARCHITECTURE.md).

use crate::accounts::Role;
use serde::{Deserialize, Serialize};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// An administrator account with a role.
    Account { name: String, role: Role },
    /// The special account for autonomous IOC scan tasks.
    Special,
}

impl Principal {
    /// The name written to the audit log.
    pub fn display_name(&self) -> &str {
        match self {
            Principal::Account { name, .. } => name,
            Principal::Special => crate::accounts::SPECIAL_ACCOUNT_NAME,
        }
    }
}

/// Every operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    ReadInventory,
    ChangeGroups,
    MoveDevice,
    RevokeDevice,
    ChangePolicy,
    ChangeDeviceSettings,
    ManageEnrollTokens,
    CreateTask,
    CancelTask,
    CreateAutonomousTask,
    HandleQuarantine,
    RestoreElsewhere,
    ReadAccounts,
    ManageAccounts,
    ManageSpecialAccount,
    ReadAudit,
    /// Changing one's own password, knowing the current one.
    ChangeOwnPassword,
}

impl Operation {
    pub const ALL: [Operation; 17] = [
        Operation::ReadInventory,
        Operation::ChangeGroups,
        Operation::MoveDevice,
        Operation::RevokeDevice,
        Operation::ChangePolicy,
        Operation::ChangeDeviceSettings,
        Operation::ManageEnrollTokens,
        Operation::CreateTask,
        Operation::CancelTask,
        Operation::CreateAutonomousTask,
        Operation::HandleQuarantine,
        Operation::RestoreElsewhere,
        Operation::ReadAccounts,
        Operation::ManageAccounts,
        Operation::ManageSpecialAccount,
        Operation::ReadAudit,
        Operation::ChangeOwnPassword,
    ];

    /// What the operation does, in words for an error message.
    pub fn describe(self) -> &'static str {
        match self {
            Operation::ReadInventory => {
                "read devices, groups, enrollment tokens, detections and quarantine"
            }
            Operation::ChangeGroups => "create, rename, move or delete administration groups",
            Operation::MoveDevice => "move devices between groups",
            Operation::RevokeDevice => "revoke devices",
            Operation::ChangePolicy => "change policies",
            Operation::ChangeDeviceSettings => "change a device's application settings",
            Operation::ManageEnrollTokens => "create enrollment tokens",
            Operation::CreateTask => "create IOC scan tasks",
            Operation::CancelTask => "cancel tasks",
            Operation::CreateAutonomousTask => "create autonomous IOC scan tasks",
            Operation::HandleQuarantine => "restore or delete quarantined objects",
            // The agent writes the restored file as root: to a path of the caller's
            // choosing, that is writing a chosen content anywhere on the device.
            Operation::RestoreElsewhere => {
                "restore quarantined objects to another path than their own"
            }
            Operation::ReadAccounts => "list accounts",
            Operation::ManageAccounts => "create or delete accounts, or set their passwords",
            Operation::ManageSpecialAccount => "manage the special account",
            Operation::ReadAudit => "read the audit log",
            Operation::ChangeOwnPassword => "change its password",
        }
    }

    /// Whether the operation only reads.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Operation::ReadInventory | Operation::ReadAccounts | Operation::ReadAudit
        )
    }
}

/// A refusal, with a message that says why.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Denied(pub String);

/// Decides whether `who` may perform `op`.
pub fn authorize(who: &Principal, op: Operation) -> Result<(), Denied> {
    let allowed = match who {
        // The special account may do exactly one thing.
        Principal::Special => op == Operation::CreateAutonomousTask,
        Principal::Account { role, .. } => match role {
            // Autonomous tasks are created by the special account only, never by a person.
            Role::Administrator => op != Operation::CreateAutonomousTask,
            Role::Operator => {
                op.is_read()
                    || matches!(
                        op,
                        Operation::CreateTask
                            | Operation::CancelTask
                            | Operation::HandleQuarantine
                            | Operation::ChangeOwnPassword
                    )
            }
            Role::Auditor => op.is_read() || op == Operation::ChangeOwnPassword,
        },
    };
    if allowed {
        return Ok(());
    }
    Err(match who {
        Principal::Special => Denied::special(),
        Principal::Account { name, role } => Denied(format!(
            "account '{name}' with role {} may not {}",
            role.as_str(),
            op.describe()
        )),
    })
}

impl Denied {
    /// The refusal of anything but an autonomous IOC scan task to the special account.
    pub fn special() -> Denied {
        Denied("the special account may only create autonomous IOC scan tasks".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_matrix() {
        use Operation::*;
        let acc = |role| Principal::Account {
            name: "x".into(),
            role,
        };
        // (operation, administrator, operator, auditor, special)
        let matrix = [
            (ReadInventory, true, true, true, false),
            (ChangeGroups, true, false, false, false),
            (MoveDevice, true, false, false, false),
            (RevokeDevice, true, false, false, false),
            (ChangePolicy, true, false, false, false),
            (ChangeDeviceSettings, true, false, false, false),
            (ManageEnrollTokens, true, false, false, false),
            (CreateTask, true, true, false, false),
            (CancelTask, true, true, false, false),
            (CreateAutonomousTask, false, false, false, true),
            (HandleQuarantine, true, true, false, false),
            (RestoreElsewhere, true, false, false, false),
            (ReadAccounts, true, true, true, false),
            (ManageAccounts, true, false, false, false),
            (ManageSpecialAccount, true, false, false, false),
            (ReadAudit, true, true, true, false),
            (ChangeOwnPassword, true, true, true, false),
        ];
        assert_eq!(matrix.len(), Operation::ALL.len());
        for (op, admin, oper, aud, special) in matrix {
            assert_eq!(
                authorize(&acc(Role::Administrator), op).is_ok(),
                admin,
                "{op:?} admin"
            );
            assert_eq!(
                authorize(&acc(Role::Operator), op).is_ok(),
                oper,
                "{op:?} operator"
            );
            assert_eq!(
                authorize(&acc(Role::Auditor), op).is_ok(),
                aud,
                "{op:?} auditor"
            );
            assert_eq!(
                authorize(&Principal::Special, op).is_ok(),
                special,
                "{op:?} special"
            );
        }
    }
}
