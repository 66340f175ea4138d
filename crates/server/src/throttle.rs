//! Throttling of failed logins, per account and per source address.
//!
//! After [`MAX_FAILURES`] failures within [`WINDOW`], further attempts for that account or
//! from that source are refused until the window has passed, even with the right password:
//! a guesser learns nothing while locked out. The failures are kept in the store, so every
//! server process on one database counts them together and a restart does not reset them;
//! housekeeping deletes those older than the window.

use riposte_store::{now_ms, Result, Store};
use std::time::Duration;

pub const MAX_FAILURES: i64 = 5;
pub const WINDOW: Duration = Duration::from_secs(300);

fn window_ms() -> i64 {
    WINDOW.as_millis() as i64
}

/// The throttle keys of an attempt; `account` is `None` for an account counted per
/// source only (the special account, which the whole fleet shares).
fn keys(account: Option<&str>, source: &str) -> Vec<String> {
    let mut k = vec![format!("source:{source}")];
    if let Some(a) = account {
        k.push(format!("account:{a}"));
    }
    k
}

/// Seconds left of a lockout, given a key's failures in the window (pure, for tests).
pub fn lockout_left(count: i64, oldest_ms: Option<i64>, now_ms: i64) -> Option<u64> {
    let oldest = oldest_ms?;
    (count >= MAX_FAILURES).then(|| {
        let left_ms = (oldest + window_ms() - now_ms).max(0);
        (left_ms as u64).div_ceil(1000).max(1)
    })
}

/// Failed-login throttle over the store.
pub struct Throttle;

impl Throttle {
    /// Seconds until attempts are allowed again, if currently locked out.
    pub async fn locked_for(
        &self,
        store: &Store,
        account: Option<&str>,
        source: &str,
    ) -> Result<Option<u64>> {
        let now = now_ms();
        let mut wait: Option<u64> = None;
        for key in keys(account, source) {
            let f = store.login_failures(&key, now - window_ms()).await?;
            if let Some(left) = lockout_left(f.count, f.oldest_ms, now) {
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        Ok(wait)
    }

    /// Records a failure.
    pub async fn fail(&self, store: &Store, account: Option<&str>, source: &str) -> Result<()> {
        store
            .record_login_failure(&keys(account, source), now_ms())
            .await
    }

    /// A success clears the account's failures (not the source's).
    pub async fn succeed(&self, store: &Store, account: &str) -> Result<()> {
        store
            .clear_login_failures(&format!("account:{account}"))
            .await
    }

    /// Forgets failures that no longer count.
    pub async fn prune(&self, store: &Store) -> Result<u64> {
        store.prune_login_failures(now_ms() - window_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riposte_store::testing::each_backend;

    #[test]
    fn lockout_needs_enough_failures_and_ends_with_the_window() {
        assert_eq!(lockout_left(MAX_FAILURES - 1, Some(0), 1_000), None);
        assert_eq!(lockout_left(MAX_FAILURES, None, 1_000), None);
        assert_eq!(lockout_left(MAX_FAILURES, Some(0), 1_000), Some(299));
        assert_eq!(lockout_left(MAX_FAILURES, Some(0), 299_999), Some(1));
    }

    #[tokio::test]
    async fn locks_per_account_and_source() {
        each_backend(|store| async move {
            let t = Throttle;
            for _ in 0..MAX_FAILURES {
                assert!(t
                    .locked_for(&store, Some("alice"), "1.1.1.1")
                    .await
                    .unwrap()
                    .is_none());
                t.fail(&store, Some("alice"), "1.1.1.1").await.unwrap();
            }
            assert!(
                t.locked_for(&store, Some("alice"), "2.2.2.2")
                    .await
                    .unwrap()
                    .is_some(),
                "account locked from any source"
            );
            assert!(
                t.locked_for(&store, Some("bob"), "1.1.1.1")
                    .await
                    .unwrap()
                    .is_some(),
                "source locked for any account"
            );
            assert!(t
                .locked_for(&store, Some("bob"), "2.2.2.2")
                .await
                .unwrap()
                .is_none());
            // A success clears the account, not the source.
            t.succeed(&store, "alice").await.unwrap();
            assert!(t
                .locked_for(&store, Some("alice"), "2.2.2.2")
                .await
                .unwrap()
                .is_none());
            assert!(t
                .locked_for(&store, Some("bob"), "1.1.1.1")
                .await
                .unwrap()
                .is_some());
            // Housekeeping keeps what is inside the window.
            assert_eq!(t.prune(&store).await.unwrap(), 0);
            assert!(t
                .locked_for(&store, Some("bob"), "1.1.1.1")
                .await
                .unwrap()
                .is_some());
        })
        .await;
    }

    #[tokio::test]
    async fn an_account_counted_per_source_only_cannot_be_locked_for_everyone() {
        each_backend(|store| async move {
            let t = Throttle;
            for _ in 0..MAX_FAILURES {
                t.fail(&store, None, "6.6.6.6").await.unwrap();
            }
            assert!(
                t.locked_for(&store, None, "6.6.6.6")
                    .await
                    .unwrap()
                    .is_some(),
                "the guessing source is locked"
            );
            assert!(
                t.locked_for(&store, None, "10.0.0.7")
                    .await
                    .unwrap()
                    .is_none(),
                "other sources still get in"
            );
        })
        .await;
    }
}
