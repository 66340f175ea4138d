//! Three-valued evaluation of an indicator against one item.
//!
//! A term whose item type is the item's own is tested against the item's value; a
//! term about another item type takes its value from a caller-supplied lookup (in a
//! sweep: "does any item of that type on this host satisfy it?"); an unsupported term
//! is *unknown*. Unknown propagates with Kleene logic so that `OR(unsupported, miss)`
//! is "undetermined", not "no match". AND/OR short-circuit, and children are ordered
//! cheapest first, so file content is only requested when a remaining term needs it.

use crate::model::{Field, FieldValue, Ioc, ItemType, Node};
use serde::Serialize;

/// Kleene truth value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Truth {
    /// Matched.
    True,
    /// Did not match.
    False,
    /// Depends on something that cannot be evaluated.
    Unknown,
}

impl From<bool> for Truth {
    fn from(b: bool) -> Self {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }
}

/// An item being evaluated; fields are fetched lazily so that expensive ones (hashes)
/// are computed only when a term needs them.
pub trait Item {
    /// The type of this item.
    fn item_type(&self) -> ItemType;
    /// The value of one field, `None` when the item has none (or it could not be read).
    fn value(&mut self, field: Field) -> Option<FieldValue>;
}

/// Result of evaluating one indicator on one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The verdict.
    pub truth: Truth,
    /// Indices (into [`Ioc::terms`]) of the terms that held on the path to a true verdict.
    pub matched: Vec<usize>,
}

/// Evaluates `ioc` on `item`. `other` gives the truth of a term about another item type.
pub fn evaluate(ioc: &Ioc, item: &mut dyn Item, other: &dyn Fn(usize) -> Truth) -> Evaluation {
    let mut matched = Vec::new();
    let truth = eval_node(ioc, &ioc.root, item, other, &mut matched);
    if truth != Truth::True {
        matched.clear();
    }
    Evaluation { truth, matched }
}

/// Evaluates a single term of `ioc` on `item` (which must be of the term's item type).
pub fn eval_term(ioc: &Ioc, term: usize, item: &mut dyn Item) -> bool {
    let t = &ioc.terms[term];
    let v = item.value(t.field);
    t.test(v.as_ref())
}

fn eval_node(
    ioc: &Ioc,
    node: &Node,
    item: &mut dyn Item,
    other: &dyn Fn(usize) -> Truth,
    matched: &mut Vec<usize>,
) -> Truth {
    match node {
        Node::Unsupported(_) => Truth::Unknown,
        Node::Term(i) => {
            let t = &ioc.terms[*i];
            let r = if t.field.item() == item.item_type() {
                Truth::from(eval_term(ioc, *i, item))
            } else {
                other(*i)
            };
            if r == Truth::True {
                matched.push(*i);
            }
            r
        }
        Node::And(children) => {
            if children.is_empty() {
                return Truth::False;
            }
            let mark = matched.len();
            let mut acc = Truth::True;
            for c in children {
                match eval_node(ioc, c, item, other, matched) {
                    Truth::False => {
                        matched.truncate(mark);
                        return Truth::False;
                    }
                    Truth::Unknown => acc = Truth::Unknown,
                    Truth::True => {}
                }
            }
            acc
        }
        Node::Or(children) => {
            let mut acc = Truth::False;
            for c in children {
                let mark = matched.len();
                match eval_node(ioc, c, item, other, matched) {
                    Truth::True => return Truth::True,
                    Truth::Unknown => {
                        matched.truncate(mark);
                        acc = Truth::Unknown
                    }
                    Truth::False => matched.truncate(mark),
                }
            }
            acc
        }
    }
}

/// Evaluates `ioc` at host level: every supported term takes its truth from `term`
/// (typically "some item satisfied it"), unsupported terms are unknown.
pub fn evaluate_host(ioc: &Ioc, term: &dyn Fn(usize) -> Truth) -> Truth {
    eval_host_node(&ioc.root, term)
}

fn eval_host_node(node: &Node, term: &dyn Fn(usize) -> Truth) -> Truth {
    match node {
        Node::Term(i) => term(*i),
        Node::Unsupported(_) => Truth::Unknown,
        Node::And(c) => {
            if c.is_empty() {
                return Truth::False;
            }
            let mut acc = Truth::True;
            for n in c {
                match eval_host_node(n, term) {
                    Truth::False => return Truth::False,
                    Truth::Unknown => acc = Truth::Unknown,
                    Truth::True => {}
                }
            }
            acc
        }
        Node::Or(c) => {
            let mut acc = Truth::False;
            for n in c {
                match eval_host_node(n, term) {
                    Truth::True => return Truth::True,
                    Truth::Unknown => acc = Truth::Unknown,
                    Truth::False => {}
                }
            }
            acc
        }
    }
}
