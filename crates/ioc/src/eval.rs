//! Three-valued evaluation of an indicator against one item.
//!
//! A term whose item type is the item's own is tested against the item's value; a
//! term about another item type takes its value from a caller-supplied lookup (in a
//! sweep: "does any item of that type on this host satisfy it?"); an unsupported term
//! is *unknown*. Unknown propagates with Kleene logic so that `OR(unsupported, miss)`
//! is "undetermined", not "no match". An AND stops at its first false child, and
//! children are ordered cheapest first, so file content is only requested when a
//! remaining term needs it. An item is a *hit* only where the indicator holds through
//! one of its own terms ([`Evaluation::witness`]), not merely because items of other
//! types satisfy the rest.

use crate::model::{Condition, Field, FieldValue, Ioc, ItemType, Node, Operand, Term};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeSet;

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
    /// Borrowed where the item holds it: a sweep asks a file for its path or digest once
    /// per term, and copying it each time cost more than the comparisons.
    fn value(&mut self, field: Field) -> Option<Cow<'_, FieldValue>>;

    /// After [`Item::value`] gave `None`: was the value there but could not be found out
    /// (the hash of a file that could not be read, or was over the size limit)? Then a
    /// term on it is *unknown*, not false: `Md5sum isnot X` must not hold for a file
    /// whose MD5 nobody computed.
    fn undetermined(&mut self, _field: Field) -> bool {
        false
    }
}

/// Result of evaluating one indicator on one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The indicator's truth, this item's own terms tested on it and the others taken
    /// from the caller.
    pub truth: Truth,
    /// Is this item itself a hit? True where the indicator holds along a path through
    /// one of the item's own terms: in `OR(FileName is x, DnsEntryItem/Host is h)`, a
    /// hosts entry for `h` makes the indicator true on every file, but only a file named
    /// `x` is a hit (and the hosts entry is, as an item of its own).
    pub witness: Truth,
    /// Indices (into [`Ioc::terms`]) of the terms that held on the paths that make this
    /// item a hit: every matching child of an `OR`, all children of an `AND`.
    pub matched: Vec<usize>,
}

/// Evaluates `ioc` on `item`. `other` gives the truth of a term about another item type.
pub fn evaluate(ioc: &Ioc, item: &mut dyn Item, other: &dyn Fn(usize) -> Truth) -> Evaluation {
    let mut matched = Vec::new();
    let (truth, witness) = eval_node_with(ioc, &ioc.root, item, other, &mut matched, true);
    if witness != Truth::True {
        matched.clear();
    }
    Evaluation {
        truth,
        witness,
        matched,
    }
}

/// Evaluates `ioc` on `item` as far as it can without the item's content: terms on
/// content (hashes) are *unknown*. `False` (not a hit) or `True` (a hit) here is the
/// final answer; only an `Unknown` from an indicator with content terms means the
/// content must be read. A sweep uses it to decide which files to queue for hashing.
pub fn evaluate_without_content(
    ioc: &Ioc,
    item: &mut dyn Item,
    other: &dyn Fn(usize) -> Truth,
) -> Truth {
    let mut matched = Vec::new();
    match eval_node_with(ioc, &ioc.root, item, other, &mut matched, false) {
        (Truth::Unknown, _) => Truth::Unknown,
        (_, witness) => witness,
    }
}

/// Evaluates a single term of `ioc` on `item` (which must be of the term's item type).
/// A value that could not be found out ([`Item::undetermined`]) satisfies no term here:
/// "some item satisfies it" must not rest on a value nobody read.
pub fn eval_term(ioc: &Ioc, term: usize, item: &mut dyn Item) -> bool {
    let t = &ioc.terms[term];
    match item.value(t.field).map(|v| t.test(Some(&v))) {
        Some(hit) => hit,
        None => !item.undetermined(t.field) && t.test(None),
    }
}

/// The truth of `node` and whether the item is a witness of it (see
/// [`Evaluation::witness`]; never above the truth), pushing onto `matched` the terms of
/// the paths that make the item a witness.
fn eval_node_with(
    ioc: &Ioc,
    node: &Node,
    item: &mut dyn Item,
    other: &dyn Fn(usize) -> Truth,
    matched: &mut Vec<usize>,
    content: bool,
) -> (Truth, Truth) {
    match node {
        Node::Unsupported(_) => (Truth::Unknown, Truth::False),
        Node::Term(i) => {
            let t = &ioc.terms[*i];
            let own = t.field.item() == item.item_type();
            let r = if !content && t.field.needs_content() {
                Truth::Unknown
            } else if own {
                match item.value(t.field).map(|v| t.test(Some(&v))) {
                    Some(hit) => Truth::from(hit),
                    None if item.undetermined(t.field) => Truth::Unknown,
                    None => Truth::from(t.test(None)),
                }
            } else {
                other(*i)
            };
            if r == Truth::True {
                matched.push(*i);
            }
            (r, if own { r } else { Truth::False })
        }
        Node::And(children) => {
            if children.is_empty() {
                return (Truth::False, Truth::False);
            }
            let mark = matched.len();
            let mut truth = Truth::True;
            let mut witness = Truth::False;
            for c in children {
                let (t, w) = eval_node_with(ioc, c, item, other, matched, content);
                match t {
                    Truth::False => {
                        matched.truncate(mark);
                        return (Truth::False, Truth::False);
                    }
                    Truth::Unknown => truth = Truth::Unknown,
                    Truth::True => {}
                }
                witness = or(witness, w);
            }
            // A witness of one child is one of the AND only where the AND holds.
            let witness = and(truth, witness);
            if witness != Truth::True {
                matched.truncate(mark);
            }
            (truth, witness)
        }
        Node::Or(children) => {
            // Every child is evaluated, even after one holds: the item may be a witness
            // through a later one, and a hit lists every term that matched.
            let mut truth = Truth::False;
            let mut witness = Truth::False;
            for c in children {
                let mark = matched.len();
                let (t, w) = eval_node_with(ioc, c, item, other, matched, content);
                truth = or(truth, t);
                witness = or(witness, w);
                if w != Truth::True {
                    matched.truncate(mark);
                }
            }
            (truth, witness)
        }
    }
}

/// Kleene AND.
fn and(a: Truth, b: Truth) -> Truth {
    match (a, b) {
        (Truth::False, _) | (_, Truth::False) => Truth::False,
        (Truth::True, Truth::True) => Truth::True,
        _ => Truth::Unknown,
    }
}

/// Kleene OR.
fn or(a: Truth, b: Truth) -> Truth {
    match (a, b) {
        (Truth::True, _) | (_, Truth::True) => Truth::True,
        (Truth::False, Truth::False) => Truth::False,
        _ => Truth::Unknown,
    }
}

/// What a file must have for an indicator to be able to hold on it: a sweep looks up
/// each file's size and name here and evaluates only the indicators that can still
/// hold, so that hash IOCs with sizes (what detections produce) cost one stat per file;
/// and once it has a file's digests, it looks them up too, so that a hundred hash terms
/// cost one set lookup per file instead of a hundred comparisons.
///
/// Soundness: for a file outside these sets, [`evaluate`] returns [`Truth::False`]
/// (never `Unknown`): a non-negated `is` term on the file's own size, name or digest is
/// false there, `AND` is false when one child is, and `OR` when all are. (For digests,
/// "outside" means the file's digests of every algorithm the indicator names are known
/// and none is in the set.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileNecessity {
    /// Sizes in bytes the file must have one of (`None`: any size).
    pub sizes: Option<BTreeSet<u64>>,
    /// Names, lower-cased, the file's lower-cased name must be one of (`None`: any).
    pub names: Option<BTreeSet<String>>,
    /// Digests (lower-case hex, any algorithm), one of which the file's digests must
    /// include (`None`: any).
    pub digests: Option<BTreeSet<String>>,
    /// Tests on the file's path, one of which must hold (`None`: no such set). Unlike
    /// the sets above these are alternatives, not values: a file passes when any one
    /// of them holds on it (see [`TextNeed::holds`]).
    pub texts: Option<BTreeSet<TextNeed>>,
}

/// A test on a file's path that an indicator needs (or needs one of its alternatives):
/// a non-negated, case-insensitive `is`, `contains`, `starts-with` or `ends-with` term
/// on the full path, directory, name or extension, with an ASCII operand.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TextNeed {
    /// `FileFullPath`, `FilePath`, `FileName` or `FileExtension`.
    pub field: Field,
    /// `Is`, `Contains`, `StartsWith` or `EndsWith`.
    pub condition: Condition,
    /// The operand, lower-cased (ASCII).
    pub needle: String,
}

impl TextNeed {
    /// Does the test hold on a field value that is ASCII and already lower-cased?
    /// (For any other value the term's own evaluation decides: Unicode case folding
    /// can turn a non-ASCII character into an ASCII one.)
    pub fn holds(&self, lowercase_ascii_value: &str) -> bool {
        let v = lowercase_ascii_value;
        match self.condition {
            Condition::Is => v == self.needle,
            Condition::Contains => v.contains(&self.needle),
            Condition::StartsWith => v.starts_with(&self.needle),
            Condition::EndsWith => v.ends_with(&self.needle),
            _ => true,
        }
    }
}

impl FileNecessity {
    /// Derives the necessary sizes and names of `ioc`.
    pub fn of(ioc: &Ioc) -> Self {
        let size = |t: &Term| match (&t.field, &t.operand) {
            (Field::FileSize, Operand::Int(n)) if plain_is(t) => {
                Some(u64::try_from(*n).map_or_else(|_| BTreeSet::new(), |n| BTreeSet::from([n])))
            }
            _ => None,
        };
        let name = |t: &Term| match (&t.field, &t.operand) {
            (Field::FileName, Operand::Str(s)) if plain_is(t) => {
                Some(BTreeSet::from([s.to_lowercase()]))
            }
            _ => None,
        };
        // Hash operands are lower-cased at parse time and compared without case; the
        // three algorithms' digests differ in length, so one set serves all of them.
        let digest = |t: &Term| match (&t.field, &t.operand) {
            (Field::FileMd5 | Field::FileSha1 | Field::FileSha256, Operand::Hash(h))
                if plain_is(t) =>
            {
                Some(BTreeSet::from([h.to_ascii_lowercase()]))
            }
            _ => None,
        };
        let text = |t: &Term| match (&t.field, &t.operand) {
            (
                Field::FileFullPath | Field::FilePath | Field::FileName | Field::FileExtension,
                Operand::Str(s),
            ) if !t.negate
                && !t.preserve_case
                && s.is_ascii()
                && matches!(
                    t.condition,
                    Condition::Is
                        | Condition::Contains
                        | Condition::StartsWith
                        | Condition::EndsWith
                ) =>
            {
                Some(BTreeSet::from([TextNeed {
                    field: t.field,
                    condition: t.condition,
                    needle: s.to_ascii_lowercase(),
                }]))
            }
            _ => None,
        };
        FileNecessity {
            sizes: necessary(&ioc.root, &ioc.terms, &size),
            names: necessary(&ioc.root, &ioc.terms, &name),
            digests: necessary_with(&ioc.root, &ioc.terms, &digest, &and_digests),
            texts: necessary_alternatives(&ioc.root, &ioc.terms, &text),
        }
    }

    /// Can the indicator hold on a file whose text fields (`field` gives each one,
    /// ASCII and lower-cased, or `None` where the file has no such value) are these?
    pub fn admits_texts<'a>(&self, field: impl Fn(Field) -> Option<&'a str>) -> bool {
        self.texts.as_ref().is_none_or(|needs| {
            needs
                .iter()
                .any(|n| field(n.field).is_some_and(|v| n.holds(v)))
        })
    }

    /// Can the indicator hold on a file with these digests (lower-case hex, of every
    /// algorithm the indicator names)?
    pub fn admits_digests<'a>(&self, digests: impl IntoIterator<Item = &'a str>) -> bool {
        self.digests
            .as_ref()
            .is_none_or(|set| digests.into_iter().any(|d| set.contains(d)))
    }

    /// Can the indicator hold on a file of this size and (lower-cased) name?
    pub fn admits(&self, size: u64, lowercase_name: impl FnOnce() -> String) -> bool {
        self.sizes.as_ref().is_none_or(|s| s.contains(&size))
            && self
                .names
                .as_ref()
                .is_none_or(|n| n.contains(&lowercase_name()))
    }
}

/// What two children of an AND need of a file's digests, joined. A file has one digest
/// per algorithm: where both children name digests of one and the same algorithm, the
/// file's digest of it must be in both sets, their intersection. Otherwise (an MD5 and a
/// SHA-256 the file must both have) the file can meet each child with a different
/// digest, and only each child's own set is necessary: the smaller is kept.
fn and_digests(a: BTreeSet<String>, b: BTreeSet<String>) -> BTreeSet<String> {
    // The three algorithms' digests differ in length.
    let algorithms = |s: &BTreeSet<String>| s.iter().map(String::len).collect::<BTreeSet<_>>();
    let (of_a, of_b) = (algorithms(&a), algorithms(&b));
    if of_a.len() == 1 && of_a == of_b {
        a.intersection(&b).cloned().collect()
    } else if b.len() < a.len() {
        b
    } else {
        a
    }
}

fn plain_is(t: &Term) -> bool {
    t.condition == Condition::Is && !t.negate
}

/// The values a file must take for `node` to hold, per `leaf`; `None` when any will do.
/// An AND needs all its children's values at once: their intersection.
fn necessary<T: Ord + Clone>(
    node: &Node,
    terms: &[Term],
    leaf: &dyn Fn(&Term) -> Option<BTreeSet<T>>,
) -> Option<BTreeSet<T>> {
    necessary_with(node, terms, leaf, &|a, b| {
        a.intersection(&b).cloned().collect()
    })
}

/// What a file needs for `node` to hold, per `leaf`, with `and` joining what two children
/// of an AND need (an OR needs one of its children's: their union).
fn necessary_with<T: Ord + Clone>(
    node: &Node,
    terms: &[Term],
    leaf: &dyn Fn(&Term) -> Option<BTreeSet<T>>,
    and: &dyn Fn(BTreeSet<T>, BTreeSet<T>) -> BTreeSet<T>,
) -> Option<BTreeSet<T>> {
    match node {
        Node::Term(i) if terms[*i].field.item() == ItemType::File => leaf(&terms[*i]),
        Node::Term(_) | Node::Unsupported(_) => None,
        // An empty AND or OR is false: nothing can satisfy it.
        Node::And(c) if c.is_empty() => Some(BTreeSet::new()),
        Node::And(c) => c
            .iter()
            .filter_map(|n| necessary_with(n, terms, leaf, and))
            .reduce(and),
        Node::Or(c) => c.iter().try_fold(BTreeSet::new(), |mut acc, n| {
            acc.extend(necessary_with(n, terms, leaf, and)?);
            Some(acc)
        }),
    }
}

/// Tests one of which must hold for `node` to hold, per `leaf` (the tests a term needs,
/// `None` when it constrains nothing); `None` when no such set exists.
///
/// The tests are alternatives: an OR needs one of its children's tests, so it takes
/// their union (and constrains nothing if one child does not); an AND needs every
/// child's, so any one child's set will do: the smallest is kept. (Intersecting, as
/// [`necessary`] does for values, would be wrong here: two different tests can both
/// hold on one file.)
fn necessary_alternatives<T: Ord + Clone>(
    node: &Node,
    terms: &[Term],
    leaf: &dyn Fn(&Term) -> Option<BTreeSet<T>>,
) -> Option<BTreeSet<T>> {
    necessary_with(node, terms, leaf, &|a, b| {
        if b.len() < a.len() {
            b
        } else {
            a
        }
    })
}

/// Evaluates `ioc` at host level: every supported term takes its truth from `term`
/// (typically "some item satisfied it"), unsupported terms are unknown.
pub fn evaluate_host(ioc: &Ioc, term: &dyn Fn(usize) -> Truth) -> Truth {
    eval_host_node(&ioc.root, term)
}

/// One observation of a pattern, judged over every object: its truth, and the objects
/// (as the report names them) that matched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationOutcome {
    /// True where some object matched the observation.
    pub truth: Truth,
    /// The objects that matched it.
    pub objects: Vec<String>,
}

/// Most alternatives a pattern's formula is expanded into before the join gives up on
/// telling objects apart (see [`join_observations`]).
const MAX_ALTERNATIVES: usize = 256;

/// Joins the observations of a pattern ([`crate::Observations`]): `formula` over each
/// observation's outcome. As STIX defines it, the observations an `AND` joins are
/// matched by *different* objects: `[file:name = 'a'] AND [file:name = 'a']` needs two
/// files named `a`. Returns the truth and, when it is true, the observations that make
/// it so (those of every alternative that holds).
///
/// The formula is expanded into its alternatives (the sets of observations that make it
/// hold together); an alternative holds where its observations can each be given an
/// object of their own. Past [`MAX_ALTERNATIVES`], objects are not told apart: each
/// observation then only needs an object.
pub fn join_observations(formula: &Node, parts: &[ObservationOutcome]) -> (Truth, BTreeSet<usize>) {
    let truth_of = |k: usize| parts.get(k).map_or(Truth::Unknown, |p| p.truth);
    let Some(alternatives) = alternatives(formula) else {
        let truth = eval_host_node(formula, &truth_of);
        let mut witnesses = BTreeSet::new();
        if truth == Truth::True {
            collect_witnesses(formula, &truth_of, &mut witnesses);
        }
        return (truth, witnesses);
    };
    let mut truth = Truth::False;
    let mut witnesses = BTreeSet::new();
    for alt in &alternatives {
        if alt.parts.iter().any(|&k| truth_of(k) == Truth::False) {
            continue;
        }
        let matched: Vec<usize> = alt
            .parts
            .iter()
            .copied()
            .filter(|&k| truth_of(k) == Truth::True)
            .collect();
        if !distinct_objects(&matched, parts) {
            continue;
        }
        if alt.unsupported || matched.len() < alt.parts.len() {
            if truth == Truth::False {
                truth = Truth::Unknown;
            }
            continue;
        }
        truth = Truth::True;
        witnesses.extend(alt.parts.iter().copied());
    }
    (truth, witnesses)
}

/// One way for a formula to hold: these observations together, and an unsupported
/// operator (unknown) among them or not.
struct Alternative {
    parts: Vec<usize>,
    unsupported: bool,
}

/// The formula's alternatives (its disjunctive form), `None` past [`MAX_ALTERNATIVES`].
fn alternatives(node: &Node) -> Option<Vec<Alternative>> {
    Some(match node {
        Node::Term(k) => vec![Alternative {
            parts: vec![*k],
            unsupported: false,
        }],
        Node::Unsupported(_) => vec![Alternative {
            parts: Vec::new(),
            unsupported: true,
        }],
        Node::Or(children) => {
            let mut all = Vec::new();
            for c in children {
                all.extend(alternatives(c)?);
                if all.len() > MAX_ALTERNATIVES {
                    return None;
                }
            }
            all
        }
        Node::And(children) => {
            if children.is_empty() {
                return Some(Vec::new());
            }
            let mut all = vec![Alternative {
                parts: Vec::new(),
                unsupported: false,
            }];
            for c in children {
                let next = alternatives(c)?;
                if all.len() * next.len() > MAX_ALTERNATIVES {
                    return None;
                }
                all = all
                    .iter()
                    .flat_map(|a| {
                        next.iter().map(move |b| Alternative {
                            parts: a.parts.iter().chain(&b.parts).copied().collect(),
                            unsupported: a.unsupported || b.unsupported,
                        })
                    })
                    .collect();
            }
            all
        }
    })
}

/// Can each observation in `observations` be given an object of its own among those
/// that matched it? (A bipartite matching, by augmenting paths.)
fn distinct_objects(observations: &[usize], parts: &[ObservationOutcome]) -> bool {
    fn augment(
        i: usize,
        candidates: &[&[String]],
        owner: &mut std::collections::HashMap<String, usize>,
        visited: &mut BTreeSet<String>,
    ) -> bool {
        for object in candidates[i] {
            if !visited.insert(object.clone()) {
                continue;
            }
            let free = match owner.get(object) {
                None => true,
                Some(&j) => augment(j, candidates, owner, visited),
            };
            if free {
                owner.insert(object.clone(), i);
                return true;
            }
        }
        false
    }
    let candidates: Vec<&[String]> = observations
        .iter()
        .map(|&k| parts.get(k).map_or(&[][..], |p| p.objects.as_slice()))
        .collect();
    let mut owner = std::collections::HashMap::new();
    (0..candidates.len()).all(|i| augment(i, &candidates, &mut owner, &mut BTreeSet::new()))
}

/// Adds to `out` the observations under `node`, which is true, that make it true.
fn collect_witnesses(node: &Node, part: &dyn Fn(usize) -> Truth, out: &mut BTreeSet<usize>) {
    match node {
        Node::Term(k) => {
            out.insert(*k);
        }
        Node::Unsupported(_) => {}
        Node::And(c) | Node::Or(c) => {
            for n in c {
                if eval_host_node(n, part) == Truth::True {
                    collect_witnesses(n, part, out);
                }
            }
        }
    }
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
