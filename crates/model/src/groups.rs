//! Administration groups: a tree in which every device sits in exactly one group.
//!
//! The tree is what policies inherit along, so the one question asked of it most is
//! "what is the path from the root to this group?" ([`GroupTree::path_to`]).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Identifier of an administration group.
pub type GroupId = i64;

/// One administration group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupNode {
    pub id: GroupId,
    pub name: String,
    /// `None` only for the root group.
    pub parent: Option<GroupId>,
}

/// Errors of the group tree's rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupTreeError {
    #[error("no administration group with id {0}")]
    UnknownGroup(GroupId),
    #[error("the group tree has a cycle through group {0}; fix the parent of that group")]
    Cycle(GroupId),
    #[error("moving group {0} under {1} would make it its own ancestor")]
    WouldCycle(GroupId, GroupId),
}

/// The administration-group tree, built from stored nodes.
#[derive(Debug, Clone, Default)]
pub struct GroupTree {
    nodes: HashMap<GroupId, GroupNode>,
}

impl GroupTree {
    /// Builds a tree from nodes; parents must exist and there must be no cycle.
    pub fn new(nodes: impl IntoIterator<Item = GroupNode>) -> Result<Self, GroupTreeError> {
        let tree = GroupTree {
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
        };
        for id in tree.nodes.keys() {
            tree.path_to(*id)?;
        }
        Ok(tree)
    }

    /// The node with this id.
    pub fn get(&self, id: GroupId) -> Option<&GroupNode> {
        self.nodes.get(&id)
    }

    /// The groups from the root down to `id`, both included.
    pub fn path_to(&self, id: GroupId) -> Result<Vec<GroupId>, GroupTreeError> {
        let mut path = Vec::new();
        let mut current = Some(id);
        while let Some(g) = current {
            if path.contains(&g) {
                return Err(GroupTreeError::Cycle(g));
            }
            let node = self.nodes.get(&g).ok_or(GroupTreeError::UnknownGroup(g))?;
            path.push(g);
            current = node.parent;
        }
        path.reverse();
        Ok(path)
    }

    /// `id` and every group below it.
    pub fn subtree(&self, id: GroupId) -> Vec<GroupId> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            let mut children: Vec<GroupId> = self
                .nodes
                .values()
                .filter(|n| n.parent == Some(parent))
                .map(|n| n.id)
                .collect();
            children.sort_unstable();
            out.extend(children);
            i += 1;
        }
        out
    }

    /// Checks that `group` may be placed under `new_parent`.
    pub fn check_reparent(
        &self,
        group: GroupId,
        new_parent: GroupId,
    ) -> Result<(), GroupTreeError> {
        if self.path_to(new_parent)?.contains(&group) {
            return Err(GroupTreeError::WouldCycle(group, new_parent));
        }
        Ok(())
    }

    /// Looks a group up by name (names are unique per server).
    pub fn by_name(&self, name: &str) -> Option<&GroupNode> {
        self.nodes.values().find(|n| n.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> GroupTree {
        GroupTree::new([
            GroupNode {
                id: 1,
                name: "root".into(),
                parent: None,
            },
            GroupNode {
                id: 2,
                name: "a".into(),
                parent: Some(1),
            },
            GroupNode {
                id: 3,
                name: "a1".into(),
                parent: Some(2),
            },
            GroupNode {
                id: 4,
                name: "b".into(),
                parent: Some(1),
            },
        ])
        .unwrap()
    }

    #[test]
    fn path_and_subtree() {
        let t = tree();
        assert_eq!(t.path_to(3).unwrap(), vec![1, 2, 3]);
        assert_eq!(t.subtree(2), vec![2, 3]);
        assert_eq!(t.subtree(1), vec![1, 2, 4, 3]);
        assert_eq!(t.path_to(9), Err(GroupTreeError::UnknownGroup(9)));
    }

    #[test]
    fn refuses_cycles() {
        let t = tree();
        assert_eq!(
            t.check_reparent(2, 3),
            Err(GroupTreeError::WouldCycle(2, 3))
        );
        assert!(t.check_reparent(3, 4).is_ok());
        let cyclic = GroupTree::new([
            GroupNode {
                id: 1,
                name: "x".into(),
                parent: Some(2),
            },
            GroupNode {
                id: 2,
                name: "y".into(),
                parent: Some(1),
            },
        ]);
        assert!(matches!(cyclic, Err(GroupTreeError::Cycle(_))));
    }
}
