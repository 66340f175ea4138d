//! Administration groups and their policies.

use crate::{conflict, get_json, now_ms, to_json, Result, Store, StoreError};
use riposte_model::{GroupNode, GroupTree, PolicySettings};
use sqlx::Row;

impl Store {
    /// Creates a group under `parent` (`None`: a root group).
    pub async fn create_group(&self, name: &str, parent: Option<i64>) -> Result<i64> {
        if let Some(p) = parent {
            self.group(p).await?;
        }
        let row = sqlx::query("INSERT INTO groups (name, parent_id) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(parent)
            .fetch_one(self.pool())
            .await
            .map_err(|e| conflict(e, || format!("a group named '{name}' already exists")))?;
        Ok(row.try_get("id")?)
    }

    /// All groups.
    pub async fn groups(&self) -> Result<Vec<GroupNode>> {
        let rows = sqlx::query("SELECT id, name, parent_id FROM groups ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(GroupNode {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    parent: r.try_get("parent_id")?,
                })
            })
            .collect()
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
        Ok(GroupNode {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            parent: row.try_get("parent_id")?,
        })
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
}
