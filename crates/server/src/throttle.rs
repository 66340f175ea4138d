//! Throttling of failed logins, per account and per source address.
//!
//! After [`MAX_FAILURES`] failures within [`WINDOW`], further attempts for that account or
//! from that source are refused until the window has passed, even with the right password:
//! a guesser learns nothing while locked out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(300);

/// Failed-login memory of one server process.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Throttle {
    /// `account` is `None` for an account counted per source only.
    fn keys(account: Option<&str>, source: &str) -> Vec<String> {
        let mut k = vec![format!("source:{source}")];
        if let Some(a) = account {
            k.push(format!("account:{a}"));
        }
        k
    }

    /// Seconds until attempts are allowed again, if currently locked out.
    pub fn locked_for(&self, account: Option<&str>, source: &str) -> Option<u64> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = None;
        for key in Self::keys(account, source) {
            if let Some(v) = map.get_mut(&key) {
                v.retain(|t| now.duration_since(*t) < WINDOW);
                if v.len() >= MAX_FAILURES {
                    let oldest = v[0];
                    let left = WINDOW.saturating_sub(now.duration_since(oldest)).as_secs() + 1;
                    wait = Some(wait.map_or(left, |w: u64| w.max(left)));
                }
            }
        }
        wait
    }

    /// Records a failure.
    pub fn fail(&self, account: Option<&str>, source: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in Self::keys(account, source) {
            map.entry(key).or_default().push(Instant::now());
        }
    }

    /// A success clears the account's failures (not the source's).
    pub fn succeed(&self, account: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&format!("account:{account}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_per_account_and_source() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES {
            assert!(t.locked_for(Some("alice"), "1.1.1.1").is_none());
            t.fail(Some("alice"), "1.1.1.1");
        }
        assert!(
            t.locked_for(Some("alice"), "2.2.2.2").is_some(),
            "account locked from any source"
        );
        assert!(
            t.locked_for(Some("bob"), "1.1.1.1").is_some(),
            "source locked for any account"
        );
        assert!(t.locked_for(Some("bob"), "2.2.2.2").is_none());
    }

    #[test]
    fn an_account_counted_per_source_only_cannot_be_locked_for_everyone() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES {
            t.fail(None, "6.6.6.6");
        }
        assert!(
            t.locked_for(None, "6.6.6.6").is_some(),
            "the guessing source is locked"
        );
        assert!(
            t.locked_for(None, "10.0.0.7").is_none(),
            "other sources still get in"
        );
    }
}
