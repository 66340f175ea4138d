//! Administration groups and their policies.

use crate::{conflict, get_json, named_alike, now_ms, to_json, Result, Store, StoreError};
use riposte_model::{GroupNode, GroupTree, PolicySettings};
use sqlx::Row;

/// The lock key of changes to the group tree ("riposte groups" in ASCII).
const GROUP_TREE_LOCK: i64 = 0x7269_706f_7374_6567;

/// The groups, as the pool or a transaction sees them.
async fn group_nodes<'e>(
    on: impl sqlx::Executor<'e, Database = sqlx::Any>,
) -> Result<Vec<GroupNode>> {
    let rows = sqlx::query("SELECT id, name, parent_id FROM groups ORDER BY id")
        .fetch_all(on)
        .await?;
    rows.iter().map(group_node).collect()
}

/// A group from a row of `SELECT id, name, parent_id FROM groups`.
fn group_node(r: &sqlx::any::AnyRow) -> Result<GroupNode> {
    Ok(GroupNode {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        parent: r.try_get("parent_id")?,
    })
}

/// Refuses `name` where another group than `except` has it, or a name that differs
/// from it only in case: groups are named in commands and policies, where `Finance` and
/// `FINANCE` side by side would be mistaken for each other.
fn no_group_named_alike(name: &str, groups: &[GroupNode], except: Option<i64>) -> Result<()> {
    let others: Vec<String> = groups
        .iter()
        .filter(|g| Some(g.id) != except)
        .map(|g| g.name.clone())
        .collect();
    match named_alike(name, &others) {
        None => Ok(()),
        Some(other) if other == name => Err(StoreError::Conflict(format!(
            "a group named '{name}' already exists"
        ))),
        Some(other) => Err(StoreError::Conflict(format!(
            "a group named '{other}' exists; names may not differ only in case"
        ))),
    }
}

impl Store {
    /// Creates a group under `parent` (`None`: a root group). Refused as a
    /// [`StoreError::Conflict`] where a group has that name, or one that differs from it
    /// only in case (checked and written as one step, so that racing requests cannot
    /// create `X` and `x`).
    pub async fn create_group(&self, name: &str, parent: Option<i64>) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        self.lock_group_tree(&mut tx).await?;
        let groups = group_nodes(&mut *tx).await?;
        if let Some(p) = parent {
            if !groups.iter().any(|g| g.id == p) {
                return Err(StoreError::NotFound(format!(
                    "no administration group with id {p}"
                )));
            }
        }
        no_group_named_alike(name, &groups, None)?;
        let row = sqlx::query("INSERT INTO groups (name, parent_id) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(parent)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("a group named '{name}' already exists")))?;
        let id = row.try_get("id")?;
        tx.commit().await?;
        Ok(id)
    }

    /// Renames group `id`; refused as [`Store::create_group`] refuses a name.
    pub async fn rename_group(&self, id: i64, name: &str) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        self.lock_group_tree(&mut tx).await?;
        let groups = group_nodes(&mut *tx).await?;
        no_group_named_alike(name, &groups, Some(id))?;
        let done = sqlx::query("UPDATE groups SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("a group named '{name}' already exists")))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no administration group with id {id}"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes group `id` a subgroup of `parent`, with everything under it. Refused where
    /// `parent` is the group itself or one of its subgroups (the tree would become a
    /// cycle). Moves and deletions of groups are serialised across server processes.
    pub async fn move_group(&self, id: i64, parent: i64) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        self.lock_group_tree(&mut tx).await?;
        let tree = GroupTree::new(group_nodes(&mut *tx).await?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (Some(group), Some(new_parent)) = (tree.get(id), tree.get(parent)) else {
            return Err(StoreError::NotFound(format!(
                "no administration group with id {}",
                if tree.get(id).is_none() { id } else { parent }
            )));
        };
        if tree.subtree(id).contains(&parent) {
            return Err(StoreError::Conflict(format!(
                "cannot move group '{}' into '{}': that is the group itself or one of its \
                 subgroups",
                group.name, new_parent.name
            )));
        }
        sqlx::query("UPDATE groups SET parent_id = $1 WHERE id = $2")
            .bind(parent)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes group `id` with its policy and enrollment tokens. Refused while devices
    /// (revoked ones too: they keep their history), subgroups or tasks refer to it.
    pub async fn delete_group(&self, id: i64) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        self.lock_group_tree(&mut tx).await?;
        let name: String = sqlx::query("SELECT name FROM groups WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no administration group with id {id}")))?
            .try_get("name")?;
        let count = |sql: &'static str| sqlx::query(sql).bind(id);
        let mut refusals = Vec::new();
        for (sql, what) in [
            (
                "SELECT COUNT(*) AS n FROM devices WHERE group_id = $1",
                "device(s), revoked ones included: move them to another group first",
            ),
            (
                "SELECT COUNT(*) AS n FROM groups WHERE parent_id = $1",
                "subgroup(s): move or delete them first",
            ),
            (
                "SELECT COUNT(*) AS n FROM tasks WHERE group_id = $1",
                "task(s), kept as the group's history",
            ),
        ] {
            let n: i64 = count(sql).fetch_one(&mut *tx).await?.try_get("n")?;
            if n > 0 {
                refusals.push(format!("{n} {what}"));
            }
        }
        if !refusals.is_empty() {
            return Err(StoreError::Conflict(format!(
                "group '{name}' cannot be deleted: it has {}",
                refusals.join("; ")
            )));
        }
        for sql in [
            "DELETE FROM policies WHERE group_id = $1",
            "DELETE FROM enroll_tokens WHERE group_id = $1",
            "DELETE FROM groups WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Serialises changes to the group tree (names and shape) for the rest of `tx`,
    /// across server processes too.
    async fn lock_group_tree(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
        self.serialise(tx, GROUP_TREE_LOCK).await
    }

    /// All groups.
    pub async fn groups(&self) -> Result<Vec<GroupNode>> {
        group_nodes(self.pool()).await
    }

    /// The group tree.
    pub async fn group_tree(&self) -> Result<GroupTree> {
        GroupTree::new(self.groups().await?).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// One group by id.
    pub async fn group(&self, id: i64) -> Result<GroupNode> {
        let row = sqlx::query("SELECT id, name, parent_id FROM groups WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no administration group with id {id}")))?;
        group_node(&row)
    }

    /// One group by name.
    pub async fn group_by_name(&self, name: &str) -> Result<GroupNode> {
        let row = sqlx::query("SELECT id FROM groups WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no administration group named '{name}'; `riposte admin group list` shows them"
                ))
            })?;
        self.group(row.try_get("id")?).await
    }

    /// The policy of a group, if it has one.
    pub async fn policy(&self, group_id: i64) -> Result<Option<PolicySettings>> {
        let row = sqlx::query("SELECT settings FROM policies WHERE group_id = $1")
            .bind(group_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| get_json(&r, "settings")).transpose()
    }

    /// Every policy, by group id.
    pub async fn policies(&self) -> Result<Vec<(i64, PolicySettings)>> {
        let rows = sqlx::query("SELECT group_id, settings FROM policies ORDER BY group_id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("group_id")?, get_json(r, "settings")?)))
            .collect()
    }

    /// A group's policy (empty where it has none) with the text it is stored as, for
    /// [`Store::replace_policy`].
    pub async fn policy_for_change(
        &self,
        group_id: i64,
    ) -> Result<(PolicySettings, Option<String>)> {
        let row = sqlx::query("SELECT settings FROM policies WHERE group_id = $1")
            .bind(group_id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(r) => Ok((get_json(&r, "settings")?, Some(r.try_get("settings")?))),
            None => Ok((PolicySettings::default(), None)),
        }
    }

    /// Stores a group's policy in place of the one read as `seen` (its stored text, or
    /// `None` where it had none); returns `false`, storing nothing, where another change
    /// landed since. Compared on the stored text, not on a re-serialised value, so that
    /// a policy written by an older version compares equal to itself.
    pub async fn replace_policy(
        &self,
        group_id: i64,
        seen: Option<&str>,
        settings: &PolicySettings,
    ) -> Result<bool> {
        self.group(group_id).await?;
        let json = to_json(settings);
        let done = match seen {
            Some(seen) => {
                sqlx::query(
                    "UPDATE policies SET settings = $1, updated_at = $2
                     WHERE group_id = $3 AND settings = $4",
                )
                .bind(json)
                .bind(now_ms())
                .bind(group_id)
                .bind(seen)
                .execute(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "INSERT INTO policies (group_id, settings, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (group_id) DO NOTHING",
                )
                .bind(group_id)
                .bind(json)
                .bind(now_ms())
                .execute(self.pool())
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Stores a group's policy, replacing the previous one.
    pub async fn set_policy(&self, group_id: i64, settings: &PolicySettings) -> Result<()> {
        self.group(group_id).await?;
        let json = to_json(settings);
        sqlx::query(
            "INSERT INTO policies (group_id, settings, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (group_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
        )
        .bind(group_id)
        .bind(json)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::each_backend;
    use crate::StoreError;
    use riposte_model::{PolicyMode, PolicySection, PolicySettings, ThreatResponse};

    #[tokio::test]
    async fn groups_and_policies() {
        each_backend(|store| async move {
            let root = store.create_group("Managed devices", None).await.unwrap();
            let a = store.create_group("A", Some(root)).await.unwrap();
            assert!(matches!(
                store.create_group("A", Some(root)).await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                store.create_group("X", Some(999)).await,
                Err(StoreError::NotFound(_))
            ));
            // Names differing only in case: refused, when asked for at once too.
            assert!(matches!(
                store.create_group("a", Some(root)).await,
                Err(StoreError::Conflict(m)) if m.contains("'A' exists; names may not differ only in case")
            ));
            for round in 0..5 {
                let (lower, upper) = (format!("race{round}"), format!("RACE{round}"));
                let (x, y) = tokio::join!(
                    store.create_group(&lower, Some(root)),
                    store.create_group(&upper, Some(root))
                );
                assert_eq!(
                    [&x, &y].iter().filter(|r| r.is_ok()).count(),
                    1,
                    "round {round}: {x:?} {y:?}"
                );
                let made = x.or(y).unwrap();
                let other = store.create_group(&format!("other{round}"), Some(root)).await.unwrap();
                let (upper, lower) = (format!("Twin{round}"), format!("twin{round}"));
                let (x, y) = tokio::join!(
                    store.rename_group(made, &upper),
                    store.rename_group(other, &lower)
                );
                assert_eq!(
                    [&x, &y].iter().filter(|r| r.is_ok()).count(),
                    1,
                    "round {round}: {x:?} {y:?}"
                );
            }
            // A group may take another case of its own name.
            store.rename_group(a, "a").await.unwrap();
            store.rename_group(a, "A").await.unwrap();
            let tree = store.group_tree().await.unwrap();
            assert_eq!(tree.path_to(a).unwrap(), vec![root, a]);
            assert_eq!(store.group_by_name("A").await.unwrap().id, a);
            assert!(store.policy(a).await.unwrap().is_none());
            let p = PolicySettings {
                threat_response: Some(PolicySection {
                    mode: PolicyMode::Enforce,
                    value: ThreatResponse {
                        enabled: true,
                        ..Default::default()
                    },
                }),
                sandbox_integration: None,
            };
            store.set_policy(a, &p).await.unwrap();
            store.set_policy(a, &p).await.unwrap();
            assert_eq!(store.policy(a).await.unwrap(), Some(p.clone()));
            assert_eq!(store.policies().await.unwrap(), vec![(a, p)]);
        })
        .await;
    }

    /// Renames, moves (never into the group's own subtree) and deletions (never of a
    /// group something still refers to); a refused change leaves the tree as it was.
    #[tokio::test]
    async fn groups_are_renamed_moved_and_deleted() {
        each_backend(|store| async move {
            let (g, devices) = crate::testing::group_with_devices(&store, &["d"]).await;
            let a = store.create_group("A", Some(g)).await.unwrap();
            let b = store.create_group("B", Some(a)).await.unwrap();
            let c = store.create_group("C", Some(g)).await.unwrap();
            let parents = || async {
                let mut v: Vec<(String, Option<i64>)> = store
                    .groups()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|n| (n.name, n.parent))
                    .collect();
                v.sort();
                v
            };

            store.rename_group(a, "A2").await.unwrap();
            assert_eq!(store.group(a).await.unwrap().name, "A2");
            assert!(matches!(
                store.rename_group(a, "C").await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                store.rename_group(999, "Z").await,
                Err(StoreError::NotFound(_))
            ));

            let before = parents().await;
            for (group, into) in [(a, a), (a, b), (g, b)] {
                match store.move_group(group, into).await {
                    Err(StoreError::Conflict(m)) => assert!(m.contains("subgroups"), "{m}"),
                    other => panic!("{group} into {into}: {other:?}"),
                }
            }
            assert!(matches!(
                store.move_group(a, 999).await,
                Err(StoreError::NotFound(_))
            ));
            assert_eq!(parents().await, before, "refused moves change nothing");
            store.move_group(a, c).await.unwrap();
            let tree = store.group_tree().await.unwrap();
            assert_eq!(tree.path_to(b).unwrap(), vec![g, c, a, b]);

            // B: a policy and an enrollment token, nothing else; C: a subgroup; G: a device.
            store
                .set_policy(b, &PolicySettings::default())
                .await
                .unwrap();
            store
                .create_enroll_token("tb", b, crate::now_ms() + 10_000, 1, "test")
                .await
                .unwrap();
            for (group, why) in [(c, "1 subgroup(s)"), (g, "1 device(s)")] {
                match store.delete_group(group).await {
                    Err(StoreError::Conflict(m)) => assert!(m.contains(why), "{m}"),
                    other => panic!("{group}: {other:?}"),
                }
            }
            store.revoke_device(devices[0]).await.unwrap();
            assert!(matches!(
                store.delete_group(g).await,
                Err(StoreError::Conflict(_))
            ));
            store.delete_group(b).await.unwrap();
            assert!(matches!(store.group(b).await, Err(StoreError::NotFound(_))));
            assert!(store.policy(b).await.unwrap().is_none());
            assert!(matches!(
                store.delete_group(b).await,
                Err(StoreError::NotFound(_))
            ));
            store.delete_group(a).await.unwrap();
            assert_eq!(
                parents().await,
                vec![("C".into(), Some(g)), ("G".into(), None)]
            );
        })
        .await;
    }

    /// A policy or a device's settings are replaced only over what was read: a write
    /// based on a stale read stores nothing and says so.
    #[tokio::test]
    async fn replacements_over_a_stale_read_store_nothing() {
        each_backend(|store| async move {
            let root = store.create_group("Managed devices", None).await.unwrap();
            let (empty, seen) = store.policy_for_change(root).await.unwrap();
            assert_eq!(seen, None);
            let mut one = empty.clone();
            one.threat_response = Some(PolicySection {
                mode: PolicyMode::Enforce,
                value: ThreatResponse::default(),
            });
            assert!(store.replace_policy(root, None, &one).await.unwrap());
            // A second writer that also read "no policy" stores nothing.
            assert!(!store.replace_policy(root, None, &empty).await.unwrap());
            let (now, seen) = store.policy_for_change(root).await.unwrap();
            assert_eq!(
                now.threat_response.as_ref().unwrap().mode,
                PolicyMode::Enforce
            );
            let seen = seen.expect("stored text");
            let mut two = now.clone();
            two.threat_response.as_mut().unwrap().mode = PolicyMode::Undefined;
            assert!(store.replace_policy(root, Some(&seen), &two).await.unwrap());
            assert!(!store.replace_policy(root, Some(&seen), &one).await.unwrap());
            assert_eq!(
                store
                    .policy(root)
                    .await
                    .unwrap()
                    .unwrap()
                    .threat_response
                    .unwrap()
                    .mode,
                PolicyMode::Undefined
            );
            assert!(matches!(
                store.replace_policy(9999, None, &one).await,
                Err(StoreError::NotFound(_))
            ));

            let (_, devices) = crate::testing::group_with_devices(&store, &["dev"]).await;
            let device = devices[0];
            let (mut local, seen) = store.local_settings_for_change(device).await.unwrap();
            local.threat_response = Some(ThreatResponse::default());
            assert!(store
                .replace_local_settings(device, &seen, &local)
                .await
                .unwrap());
            assert!(!store
                .replace_local_settings(device, &seen, &Default::default())
                .await
                .unwrap());
            assert!(store
                .local_settings_for_change(device)
                .await
                .unwrap()
                .0
                .threat_response
                .is_some());
        })
        .await;
    }

    /// The database's refusals that a caller answers in words: a row referred to that
    /// is gone (a change racing a deletion), and text PostgreSQL cannot hold (a NUL).
    #[tokio::test]
    async fn database_refusals_are_told_apart() {
        each_backend(|store| async move {
            let e: StoreError = sqlx::query(
                "INSERT INTO policies (group_id, settings, updated_at) VALUES (99999, '{}', 0)",
            )
            .execute(store.pool())
            .await
            .unwrap_err()
            .into();
            assert!(e.refers_to_missing_row(), "{e}");
            assert!(!e.is_unstorable_text(), "{e}");
            let found = sqlx::query("SELECT id FROM groups WHERE name = $1")
                .bind("a\0b")
                .fetch_optional(store.pool())
                .await
                .map(|row| row.is_some());
            match store.backend() {
                crate::Backend::Postgres => {
                    let e = StoreError::from(found.unwrap_err());
                    assert!(e.is_unstorable_text(), "{e}");
                    assert!(!e.refers_to_missing_row(), "{e}");
                }
                crate::Backend::Sqlite => assert!(!found.unwrap()),
            }
        })
        .await;
    }
}
