//! Throttling of failed logins, per account and per source address.
//!
//! After [`MAX_FAILURES`] failures within [`WINDOW`], further attempts for that account or
//! from that source are refused until the window has passed, even with the right password:
//! a guesser learns nothing while locked out. The failures are kept in the store, so every
//! server process on one database counts them together and a restart does not reset them;
//! housekeeping deletes those older than the window.
//!
//! Two more things keep the count honest and the server up:
//!
//! * Attempts from one source are taken one at a time ([`Throttle::serialize`]): a
//!   burst of parallel guesses would otherwise all pass the lockout check before the
//!   first failure was recorded. The locks are a fixed set of stripes, so memory does
//!   not grow with the number of sources.
//! * Password hashes are checked at most [`Throttle::verify_slots`] at a time: Argon2id
//!   takes about 19 MiB and tens of milliseconds per check, before anyone is
//!   authenticated.
//!
//! IPv6 sources are counted per /64: one host usually holds a whole /64.

use riposte_store::{now_ms, Result, Store};
use std::net::IpAddr;
use std::time::Duration;

pub const MAX_FAILURES: i64 = 5;
pub const WINDOW: Duration = Duration::from_secs(300);

fn window_ms() -> i64 {
    WINDOW.as_millis() as i64
}

/// The throttle keys of an attempt; `account` is `None` for an account counted per
/// source only (the special account, which the whole fleet shares).
fn keys(account: Option<&str>, source: &str) -> Vec<String> {
    let mut k = vec![format!("source:{}", source_key(source))];
    if let Some(a) = account {
        k.push(format!("account:{a}"));
    }
    k
}

/// The part of a source address that is counted: the address, or its /64 for IPv6.
pub fn source_key(source: &str) -> String {
    match source.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(String::new, |v4| v4.to_string()),
        _ => source.to_string(),
    }
}

const STRIPES: usize = 64;

/// Seconds left of a lockout, given a key's failures in the window (pure, for tests).
pub fn lockout_left(count: i64, oldest_ms: Option<i64>, now_ms: i64) -> Option<u64> {
    let oldest = oldest_ms?;
    (count >= MAX_FAILURES).then(|| {
        let left_ms = (oldest + window_ms() - now_ms).max(0);
        (left_ms as u64).div_ceil(1000).max(1)
    })
}

/// Failed-login throttle over the store.
pub struct Throttle {
    stripes: Vec<tokio::sync::Mutex<()>>,
    verifying: tokio::sync::Semaphore,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            verifying: tokio::sync::Semaphore::new(Throttle::verify_slots()),
        }
    }

    /// How many password checks run at once: twice the cores, so the CPU stays busy
    /// while memory stays bounded.
    pub fn verify_slots() -> usize {
        2 * std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Holds attempts from `source` (its counted part) to one at a time in this process,
    /// for as long as the guard lives.
    pub async fn serialize(&self, source: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source_key(source).hash(&mut h);
        self.stripes[(h.finish() as usize) % STRIPES].lock().await
    }

    /// A slot to check one password hash in.
    pub async fn verify_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.verifying.acquire().await.ok()
    }

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
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(source_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            source_key("2001:db8:1:2:ffff:1:2:3"),
            source_key("2001:db8:1:2::9")
        );
        assert_ne!(source_key("2001:db8:1:3::1"), source_key("2001:db8:1:2::1"));
        assert_eq!(source_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key("unknown"), "unknown");
    }

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
            let t = Throttle::new();
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
            let t = Throttle::new();
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
