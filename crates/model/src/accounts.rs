//! Account kinds and the rules of the special account.

use serde::{Deserialize, Serialize};

/// The role of an administrator account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including accounts, policies and groups.
    Administrator,
    /// Runs tasks and handles quarantine; reads everything; cannot change accounts,
    /// groups or policies.
    Operator,
    /// Reads everything, changes nothing but its own password.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Administrator, Role::Operator, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Result<Role, AccountError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AccountError::UnknownRole(s.to_string()))
    }
}

/// The special account's fixed name.
pub const SPECIAL_ACCOUNT_NAME: &str = "riposte-autonomous";

/// Shortest and longest special-account password, in characters.
pub const SPECIAL_PASSWORD_MIN: usize = 8;
pub const SPECIAL_PASSWORD_MAX: usize = 16;

/// Broken account rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("the special account's password must be 8 to 16 characters long; this one has {0}")]
    SpecialPasswordLength(usize),
    #[error("the special account already exists on this server; there can be only one (delete it first to create it again)")]
    SpecialAccountExists,
    #[error("the special account's password can never be changed; delete the account and create it again")]
    SpecialPasswordImmutable,
    #[error("the special account does not exist; an administrator can create it")]
    NoSpecialAccount,
    #[error("unknown role '{0}'; roles are administrator, operator, auditor")]
    UnknownRole(String),
    #[error("an account name must be 1 to 64 characters of letters, digits, '.', '-', '_' or '@'")]
    BadName,
    #[error("the name '{0}' is the special account's (in any case): choose another")]
    ReservedName(String),
    #[error("the special account's password cannot hold control characters (a newline, a tab) nor be only spaces: every device must be able to present it as given")]
    SpecialPasswordCharacters,
    #[error("an administrator password must be at least 12 characters long")]
    WeakPassword,
    #[error("the new password is the current one: choose another")]
    PasswordUnchanged,
}

/// Checks the special account's password rule (8–16 characters, counted as characters).
pub fn validate_special_password(password: &str) -> Result<(), AccountError> {
    let n = password.chars().count();
    if !(SPECIAL_PASSWORD_MIN..=SPECIAL_PASSWORD_MAX).contains(&n) {
        return Err(AccountError::SpecialPasswordLength(n));
    }
    if password.chars().any(char::is_control) || password.trim().is_empty() {
        return Err(AccountError::SpecialPasswordCharacters);
    }
    Ok(())
}

/// Checks an account name.
pub fn validate_account_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if !ok {
        return Err(AccountError::BadName);
    }
    // A look-alike of the special account's name would read as it in the audit log.
    if name.eq_ignore_ascii_case(SPECIAL_ACCOUNT_NAME) {
        return Err(AccountError::ReservedName(name.to_string()));
    }
    Ok(())
}

/// Checks an administrator account password.
pub fn validate_admin_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() >= 12 {
        Ok(())
    } else {
        Err(AccountError::WeakPassword)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_password_lengths() {
        assert_eq!(
            validate_special_password("1234567"),
            Err(AccountError::SpecialPasswordLength(7))
        );
        assert_eq!(validate_special_password("12345678"), Ok(()));
        assert_eq!(validate_special_password("1234567890123456"), Ok(()));
        assert_eq!(
            validate_special_password("12345678901234567"),
            Err(AccountError::SpecialPasswordLength(17))
        );
        // Characters, not bytes: eight 2-byte characters are eight characters.
        assert_eq!(validate_special_password("éééééééé"), Ok(()));
        for bad in ["        ", "1234\n5678", "1234\t5678", "\u{1}2345678"] {
            assert_eq!(
                validate_special_password(bad),
                Err(AccountError::SpecialPasswordCharacters),
                "{bad:?}"
            );
        }
        assert_eq!(validate_special_password("pass word"), Ok(()));
        for reserved in ["riposte-autonomous", "Riposte-Autonomous"] {
            assert_eq!(
                validate_account_name(reserved),
                Err(AccountError::ReservedName(reserved.into()))
            );
        }
        let msg = AccountError::SpecialPasswordLength(7).to_string();
        assert!(msg.contains("8 to 16"), "{msg}");
    }

    #[test]
    fn names() {
        assert!(validate_account_name("alice.b").is_ok());
        assert!(validate_account_name("").is_err());
        assert!(validate_account_name("a b").is_err());
        assert!(validate_account_name(SPECIAL_ACCOUNT_NAME).is_err());
        assert_eq!(Role::parse("operator"), Ok(Role::Operator));
        assert!(Role::parse("root").is_err());
    }
}
