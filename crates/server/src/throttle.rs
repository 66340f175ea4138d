//! Throttling of failed logins, per source address and per account.
//!
//! Two counts, over a sliding [`WINDOW`]:
//!
//! * **Per source.** After [`MAX_FAILURES`] failures from one address, further attempts
//!   from it are refused until the window has passed, even with the right password: a
//!   guesser learns nothing while locked out. The special account's attempts are counted
//!   apart from the administrators' ones, so an administrator mistyping a password on a
//!   device does not stop that device's group actions, and the other way round.
//! * **Per account, across sources.** A guesser with many addresses would get
//!   [`MAX_FAILURES`] tries from each. After [`MAX_FAILURES`] failures for one
//!   administrator account ([`MAX_SPECIAL_FAILURES`] for the special account, which the
//!   whole fleet shares and whose stale passwords fail from many devices at once), that
//!   account is locked **for sources it has not logged in from** within
//!   [`KNOWN_SOURCE_FOR`]. Locking it everywhere would hand any outsider a switch that
//!   shuts the administrators, or every device's group actions, out; sparing known
//!   sources keeps them working while new sources wait. A success does not clear the
//!   account's count, so logging in from a known source does not open the way again.
//!
//! The failures and known sources are kept in the store, so every server process on one
//! database counts them together and a restart does not reset them; housekeeping deletes
//! those that no longer count.
//!
//! Two more things keep the count honest and the server up:
//!
//! * Attempts from one source are taken one at a time ([`Throttle::serialize`]): a
//!   burst of parallel guesses would otherwise all pass the lockout check before the
//!   first failure was recorded. The locks are a fixed set of stripes, so memory does
//!   not grow with the number of sources.
//! * Across sources, an attempt from an address the account does not know counts as a
//!   failure of its account from the moment it is admitted, before its password is
//!   checked, and a success withdraws it ([`Throttle::admit`]): guesses from many
//!   addresses at once get no more checks than the account's limit, in every server
//!   process on the database. An attempt from a known address counts only once it has
//!   failed, so that its owner's parallel requests lock no one out.
//! * Password hashes are checked at most [`Throttle::verify_slots`] at a time: Argon2id
//!   takes about 19 MiB and tens of milliseconds per check, before anyone is
//!   authenticated.
//!
//! IPv6 sources are counted per /64: one host usually holds a whole /64.

use riposte_store::{now_ms, Result, Store};
use std::net::IpAddr;
use std::time::Duration;

/// Failures from one source, or for one administrator account, before a lockout.
pub const MAX_FAILURES: i64 = 5;
/// Failures for the special account, from all sources together, before unknown sources
/// are locked out of it.
pub const MAX_SPECIAL_FAILURES: i64 = 20;
/// How long failures count.
pub const WINDOW: Duration = Duration::from_secs(300);
/// How long a source an account logged in from stays known to it.
pub const KNOWN_SOURCE_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

fn window_ms() -> i64 {
    WINDOW.as_millis() as i64
}

fn known_for_ms() -> i64 {
    KNOWN_SOURCE_FOR.as_millis() as i64
}

/// Whose password an attempt tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// An administrator account, by name (whether or not it exists: a guesser must not
    /// learn which names do).
    Account(&'a str),
    /// The special account.
    Special,
    /// A name no account can have: counted for its source only, so that such names do
    /// not create a record each.
    NoAccount,
}

impl Target<'_> {
    fn source_key(self, source: &str) -> String {
        match self {
            Target::Special => format!("special-source:{}", source_key(source)),
            _ => format!("source:{}", source_key(source)),
        }
    }

    /// How failures are counted for the account across sources, if it has an account.
    fn account_count(self) -> Option<AccountCount> {
        match self {
            Target::Account(name) => Some(AccountCount {
                key: format!("account:{name}"),
                limit: MAX_FAILURES,
                known_as: name.to_string(),
            }),
            Target::Special => Some(AccountCount {
                key: "special".to_string(),
                limit: MAX_SPECIAL_FAILURES,
                // A name no administrator account can have.
                known_as: riposte_model::accounts::SPECIAL_ACCOUNT_NAME.to_string(),
            }),
            Target::NoAccount => None,
        }
    }
}

/// An account's count of failures across sources.
struct AccountCount {
    /// Its failures' key in the store.
    key: String,
    /// Failures within the window that lock it for unknown sources.
    limit: i64,
    /// The name its known sources are kept under.
    known_as: String,
}

/// The part of a source address that is counted: the address, or its /64 for IPv6. A
/// source may name where the request came in before its address (`console 192.0.2.7`,
/// as the console's requests are written to the audit log): only the address counts,
/// so that the API and the console keep one count, and one set of known sources, per
/// address.
pub fn source_key(source: &str) -> String {
    let source = source.rsplit(' ').next().unwrap_or(source);
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

/// Seconds left of a lockout, given a key's failures in the window and its limit
/// (pure, for tests).
pub fn lockout_left(count: i64, limit: i64, oldest_ms: Option<i64>, now_ms: i64) -> Option<u64> {
    let oldest = oldest_ms?;
    (count >= limit).then(|| {
        let left_ms = (oldest + window_ms() - now_ms).max(0);
        (left_ms as u64).div_ceil(1000).max(1)
    })
}

/// Why attempts are refused for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// Too many failures from this source; seconds left.
    Source(u64),
    /// Too many failures for this account, and this source is not one it has used;
    /// seconds left.
    Account(u64),
}

impl std::fmt::Display for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lockout::Source(s) => write!(
                f,
                "too many failed logins from this address; try again in {s} seconds"
            ),
            Lockout::Account(s) => write!(
                f,
                "too many failed logins for this account from addresses it has not logged in \
                 from before; try again in {s} seconds, or from an address it has used"
            ),
        }
    }
}

/// The lockout of `source` itself, if its failures (for `target`'s kind of account)
/// reached the limit.
async fn source_lockout(
    store: &Store,
    target: Target<'_>,
    source: &str,
    now: i64,
) -> Result<Option<Lockout>> {
    let f = store
        .login_failures(&target.source_key(source), now - window_ms())
        .await?;
    Ok(lockout_left(f.count, MAX_FAILURES, f.oldest_ms, now).map(Lockout::Source))
}

/// The lockout of `account` for `source`, given its failures `f`: none for a source the
/// account has logged in from lately.
async fn account_lockout(
    store: &Store,
    account: &AccountCount,
    f: riposte_store::FailureCount,
    source: &str,
    now: i64,
) -> Result<Option<Lockout>> {
    let Some(left) = lockout_left(f.count, account.limit, f.oldest_ms, now) else {
        return Ok(None);
    };
    let known = store
        .is_known_source(&account.known_as, &source_key(source), now - known_for_ms())
        .await?;
    Ok((!known).then_some(Lockout::Account(left)))
}

/// An attempt [`Throttle::admit`] let through, to be finished with
/// [`Throttle::failed`] or [`Throttle::succeeded`].
#[must_use = "an admitted attempt counts as a failure until it is finished"]
#[derive(Debug)]
pub struct Attempt {
    /// The id of the failure counted against its account in advance.
    reserved: Option<String>,
    /// The account's failure key, where the attempt was not counted in advance (it
    /// comes from a source the account knows) and is counted only if it fails.
    counts_on_failure: Option<String>,
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

    /// Whether an attempt at `target` from `source` is refused for now, and why,
    /// without counting one (the tests' view of [`Throttle::admit`]).
    #[cfg(test)]
    pub async fn locked_for(
        &self,
        store: &Store,
        target: Target<'_>,
        source: &str,
    ) -> Result<Option<Lockout>> {
        let now = now_ms();
        if let Some(lockout) = source_lockout(store, target, source, now).await? {
            return Ok(Some(lockout));
        }
        match target.account_count() {
            Some(account) => {
                let f = store
                    .login_failures(&account.key, now - window_ms())
                    .await?;
                account_lockout(store, &account, f, source, now).await
            }
            None => Ok(None),
        }
    }

    /// Admits an attempt at `target` from `source`, or says why it is refused for now.
    ///
    /// An admitted attempt already counts as a failure of its account, before its
    /// password is checked: parallel attempts from many sources would otherwise all
    /// pass the account's check while the first one was still being verified. The count
    /// is withdrawn when the attempt succeeds ([`Throttle::succeeded`]); an attempt that
    /// is never finished (a crash) stays counted, which errs on the safe side.
    pub async fn admit(
        &self,
        store: &Store,
        target: Target<'_>,
        source: &str,
    ) -> Result<std::result::Result<Attempt, Lockout>> {
        let now = now_ms();
        if let Some(lockout) = source_lockout(store, target, source, now).await? {
            return Ok(Err(lockout));
        }
        let Some(account) = target.account_count() else {
            return Ok(Ok(Attempt {
                reserved: None,
                counts_on_failure: None,
            }));
        };
        // From an address the account has logged in from, attempts are not counted in
        // advance: its owner's parallel requests (a script, a console beside the CLI)
        // would otherwise read as failures and lock the account for new addresses, with
        // no failure at all. Such an address cannot burst guesses: its attempts are taken
        // one at a time in each server process (`serialize`: with N processes on one
        // database, N at once), and it has a count of its own; a failure from it still
        // counts against the account, once it has failed.
        if store
            .is_known_source(&account.known_as, &source_key(source), now - known_for_ms())
            .await?
        {
            return Ok(Ok(Attempt {
                reserved: None,
                counts_on_failure: Some(account.key),
            }));
        }
        let id = format!("{now}-{:016x}", rand::random::<u64>());
        let mut f = store
            .reserve_login_failure(&account.key, &id, now, now - window_ms())
            .await?;
        // The failures before this attempt: all but its own.
        f.count -= 1;
        if let Some(lockout) = account_lockout(store, &account, f, source, now).await? {
            store.withdraw_login_failure(&id).await?;
            return Ok(Err(lockout));
        }
        Ok(Ok(Attempt {
            reserved: Some(id),
            counts_on_failure: None,
        }))
    }

    /// Records that an admitted attempt failed (its account's count already holds it,
    /// unless it came from a known source).
    pub async fn failed(
        &self,
        store: &Store,
        target: Target<'_>,
        source: &str,
        attempt: Attempt,
    ) -> Result<()> {
        let mut keys = vec![target.source_key(source)];
        keys.extend(attempt.counts_on_failure);
        store.record_login_failure(&keys, now_ms()).await
    }

    /// Records that an admitted attempt succeeded: it no longer counts as a failure, and
    /// `source` becomes known to the account.
    pub async fn succeeded(
        &self,
        store: &Store,
        target: Target<'_>,
        source: &str,
        attempt: Attempt,
    ) -> Result<()> {
        if let Some(id) = &attempt.reserved {
            store.withdraw_login_failure(id).await?;
        }
        self.succeed(store, target, source).await
    }

    /// Records a failure not admitted first (the tests' shortcut for
    /// [`Throttle::admit`] then [`Throttle::failed`]).
    #[cfg(test)]
    pub async fn fail(&self, store: &Store, target: Target<'_>, source: &str) -> Result<()> {
        let mut keys = vec![target.source_key(source)];
        keys.extend(target.account_count().map(|account| account.key));
        store.record_login_failure(&keys, now_ms()).await
    }

    /// Records a success: `source` becomes known to the account.
    pub async fn succeed(&self, store: &Store, target: Target<'_>, source: &str) -> Result<()> {
        match target.account_count() {
            Some(account) => {
                store
                    .record_known_source(&account.known_as, &source_key(source), now_ms())
                    .await
            }
            None => Ok(()),
        }
    }

    /// Forgets what was learnt of an administrator account: its failures and the
    /// addresses it used (its deletion, as an account created later under that name is
    /// someone else; a reset of its password, as after a compromise the intruder's
    /// addresses must not stay spared by its lockout).
    pub async fn forget_account(&self, store: &Store, name: &str) -> Result<()> {
        forget_account(store, name).await
    }

    /// Forgets failures and known sources that no longer count.
    pub async fn prune(&self, store: &Store) -> Result<u64> {
        let now = now_ms();
        Ok(store.prune_login_failures(now - window_ms()).await?
            + store.prune_known_sources(now - known_for_ms()).await?)
    }
}

/// [`Throttle::forget_account`], for a process that serves nothing (the offline
/// password reset): what it forgets is in the store, not in the throttle.
pub async fn forget_account(store: &Store, name: &str) -> Result<()> {
    if let Some(account) = Target::Account(name).account_count() {
        store.forget_known_sources(&account.known_as).await?;
        store.clear_login_failures(&account.key).await?;
    }
    Ok(())
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
        // The console's sources name it; the address is what counts.
        assert_eq!(source_key("console 192.0.2.7"), "192.0.2.7");
        assert_eq!(
            source_key("console 2001:db8:1:2::9"),
            source_key("2001:db8:1:2::1")
        );
        assert_eq!(source_key("unknown"), "unknown");
    }

    #[test]
    fn lockout_needs_enough_failures_and_ends_with_the_window() {
        assert_eq!(
            lockout_left(MAX_FAILURES - 1, MAX_FAILURES, Some(0), 1_000),
            None
        );
        assert_eq!(lockout_left(MAX_FAILURES, MAX_FAILURES, None, 1_000), None);
        assert_eq!(
            lockout_left(MAX_FAILURES, MAX_FAILURES, Some(0), 1_000),
            Some(299)
        );
        assert_eq!(
            lockout_left(MAX_FAILURES, MAX_FAILURES, Some(0), 299_999),
            Some(1)
        );
        assert_eq!(lockout_left(19, MAX_SPECIAL_FAILURES, Some(0), 1_000), None);
    }

    async fn locked(
        t: &Throttle,
        store: &Store,
        target: Target<'_>,
        source: &str,
    ) -> Option<Lockout> {
        t.locked_for(store, target, source).await.unwrap()
    }

    #[tokio::test]
    async fn a_source_is_locked_for_every_account_after_its_failures() {
        each_backend(|store| async move {
            let t = Throttle::new();
            for _ in 0..MAX_FAILURES {
                assert_eq!(
                    locked(&t, &store, Target::Account("alice"), "1.1.1.1").await,
                    None
                );
                t.fail(&store, Target::Account("alice"), "1.1.1.1")
                    .await
                    .unwrap();
            }
            assert!(matches!(
                locked(&t, &store, Target::Account("bob"), "1.1.1.1").await,
                Some(Lockout::Source(_))
            ));
            assert!(matches!(
                locked(&t, &store, Target::NoAccount, "1.1.1.1").await,
                Some(Lockout::Source(_))
            ));
            // The special account's attempts are counted apart: a device's group actions
            // go on while someone mistypes an administrator's password at it.
            assert_eq!(locked(&t, &store, Target::Special, "1.1.1.1").await, None);
            assert_eq!(
                locked(&t, &store, Target::Account("bob"), "2.2.2.2").await,
                None
            );
            // Housekeeping keeps what is inside the window.
            assert_eq!(t.prune(&store).await.unwrap(), 0);
            assert!(locked(&t, &store, Target::Account("bob"), "1.1.1.1")
                .await
                .is_some());
        })
        .await;
    }

    #[tokio::test]
    async fn failures_from_many_sources_lock_an_account_only_for_sources_it_has_not_used() {
        each_backend(|store| async move {
            let t = Throttle::new();
            // Alice logged in from her workstation before the attack.
            t.succeed(&store, Target::Account("alice"), "10.0.0.5")
                .await
                .unwrap();
            for i in 0..MAX_FAILURES {
                let source = format!("203.0.113.{i}");
                assert_eq!(
                    locked(&t, &store, Target::Account("alice"), &source).await,
                    None
                );
                t.fail(&store, Target::Account("alice"), &source)
                    .await
                    .unwrap();
            }
            assert!(
                matches!(
                    locked(&t, &store, Target::Account("alice"), "198.51.100.1").await,
                    Some(Lockout::Account(_))
                ),
                "a new source is locked out of the account"
            );
            assert_eq!(
                locked(&t, &store, Target::Account("alice"), "10.0.0.5").await,
                None,
                "her own workstation still gets in"
            );
            assert_eq!(
                locked(&t, &store, Target::Account("bob"), "198.51.100.1").await,
                None,
                "other accounts are not touched"
            );
            // Her success does not reopen the account to new sources.
            t.succeed(&store, Target::Account("alice"), "10.0.0.5")
                .await
                .unwrap();
            assert!(locked(&t, &store, Target::Account("alice"), "198.51.100.1")
                .await
                .is_some());
            // Deleting the account forgets it: a new "alice" starts afresh.
            t.forget_account(&store, "alice").await.unwrap();
            assert_eq!(
                locked(&t, &store, Target::Account("alice"), "198.51.100.1").await,
                None
            );
            assert!(!store.is_known_source("alice", "10.0.0.5", 0).await.unwrap());
        })
        .await;
    }

    /// Thirty guesses at one account from thirty addresses at once: exactly as many get
    /// a password check as the account allows, since each is counted before its check.
    /// A success withdraws its count; a known source still gets in.
    #[tokio::test]
    async fn parallel_attempts_from_many_sources_get_no_more_checks_than_the_account_allows() {
        each_backend(|store| async move {
            let t = std::sync::Arc::new(Throttle::new());
            t.succeed(&store, Target::Account("alice"), "10.0.0.5")
                .await
                .unwrap();
            let ok = t
                .admit(&store, Target::Account("alice"), "10.0.0.5")
                .await
                .unwrap()
                .unwrap();
            t.succeeded(&store, Target::Account("alice"), "10.0.0.5", ok)
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for i in 0..30 {
                let (t, store) = (t.clone(), store.clone());
                tasks.push(tokio::spawn(async move {
                    let source = format!("203.0.113.{i}");
                    match t
                        .admit(&store, Target::Account("alice"), &source)
                        .await
                        .unwrap()
                    {
                        Ok(attempt) => {
                            // The password check would take a while: the others run.
                            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                            t.failed(&store, Target::Account("alice"), &source, attempt)
                                .await
                                .unwrap();
                            true
                        }
                        Err(lockout) => {
                            assert!(matches!(lockout, Lockout::Account(_)), "{lockout}");
                            false
                        }
                    }
                }));
            }
            let mut checked = 0;
            for task in tasks {
                checked += i64::from(task.await.unwrap());
            }
            assert_eq!(checked, MAX_FAILURES);
            let failures = store.login_failures("account:alice", 0).await.unwrap();
            assert_eq!(
                failures.count, MAX_FAILURES,
                "refused attempts are not counted"
            );
            assert!(t
                .admit(&store, Target::Account("alice"), "10.0.0.5")
                .await
                .unwrap()
                .is_ok());
        })
        .await;
    }

    /// Attempts in flight from addresses the account knows (its owner working from
    /// several at once) are not counted in advance: they lock no new address out while
    /// none has failed. One that fails counts, once it has.
    #[tokio::test]
    async fn attempts_in_flight_from_known_sources_lock_no_one_out() {
        each_backend(|store| async move {
            let t = Throttle::new();
            let known: Vec<String> = (0..MAX_FAILURES + 3)
                .map(|i| format!("10.0.1.{i}"))
                .collect();
            for source in &known {
                t.succeed(&store, Target::Account("alice"), source)
                    .await
                    .unwrap();
            }
            let mut in_flight = Vec::new();
            for source in &known {
                in_flight.push(
                    t.admit(&store, Target::Account("alice"), source)
                        .await
                        .unwrap()
                        .expect("a known source is admitted"),
                );
            }
            // A new address, meanwhile: nothing has failed.
            let fresh = t
                .admit(&store, Target::Account("alice"), "198.51.100.7")
                .await
                .unwrap()
                .expect("no failure, no lockout");
            t.succeeded(&store, Target::Account("alice"), "198.51.100.7", fresh)
                .await
                .unwrap();
            // The known sources' attempts fail: now they count against the account.
            for (source, attempt) in known.iter().zip(in_flight) {
                t.failed(&store, Target::Account("alice"), source, attempt)
                    .await
                    .unwrap();
            }
            let failures = store.login_failures("account:alice", 0).await.unwrap();
            assert_eq!(failures.count, MAX_FAILURES + 3);
            assert!(matches!(
                locked(&t, &store, Target::Account("alice"), "198.51.100.8").await,
                Some(Lockout::Account(_))
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn the_special_account_locks_unknown_sources_only_after_many_failures() {
        each_backend(|store| async move {
            let t = Throttle::new();
            // A device that has used the special account before.
            t.succeed(&store, Target::Special, "10.0.0.7")
                .await
                .unwrap();
            // One guessing source is locked on its own ...
            for _ in 0..MAX_FAILURES {
                t.fail(&store, Target::Special, "6.6.6.6").await.unwrap();
            }
            assert!(matches!(
                locked(&t, &store, Target::Special, "6.6.6.6").await,
                Some(Lockout::Source(_))
            ));
            assert_eq!(
                locked(&t, &store, Target::Special, "10.0.0.8").await,
                None,
                "five failures do not lock the whole fleet"
            );
            // ... and many sources together lock every source the account has not used.
            for i in 0..(MAX_SPECIAL_FAILURES - MAX_FAILURES) {
                t.fail(&store, Target::Special, &format!("203.0.113.{i}"))
                    .await
                    .unwrap();
            }
            assert!(matches!(
                locked(&t, &store, Target::Special, "10.0.0.8").await,
                Some(Lockout::Account(_))
            ));
            assert_eq!(
                locked(&t, &store, Target::Special, "10.0.0.7").await,
                None,
                "a device that used the account keeps its group actions"
            );
            // An administrator account of the special account's known-source name
            // cannot exist, and its failures never touch the special account.
            assert_eq!(
                locked(&t, &store, Target::Account("special"), "10.0.0.8").await,
                None
            );
        })
        .await;
    }
}
