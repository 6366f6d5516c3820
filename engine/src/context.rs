//! The context of a job: facts ordered by `(key, id)` with provenance, and the frozen [`View`] agents read.
//!
//! Facts live in a map from key to a map from id to entry, so a read by key costs `O(log K + n)` for the `n`
//! facts it returns, never the size of the context. Between cycles the engine is the only owner of the
//! context and merges in place; during a cycle every agent shares one immutable snapshot through an `Arc`,
//! so no call copies the context. Nothing here is ever overwritten or removed.

use crate::model::Fact;
use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::sync::Arc;

/// Where a fact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub content: String,
    pub agent: Arc<str>,
    pub cycle: u32,
}

/// A fact in the context with its provenance, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactRef<'a> {
    /// Namespace.
    pub key: &'a str,
    /// Identity within the key.
    pub id: &'a str,
    /// Content.
    pub content: &'a str,
    /// The agent that wrote it (`seed`, `human` and `engine` for seeds, answers and diagnostics).
    pub agent: &'a str,
    /// The cycle that inserted it (0 for seeds).
    pub cycle: u32,
}

impl FactRef<'_> {
    /// An owned copy of the fact, without provenance.
    pub fn to_fact(&self) -> Fact {
        Fact::new(self.key, self.id, self.content)
    }
}

/// All facts of one job.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    keys: BTreeMap<String, BTreeMap<String, Entry>>,
    len: usize,
    /// Ids inserted by the previous cycle (or the seeds, before cycle 1), per key.
    added: BTreeMap<String, BTreeSet<String>>,
}

impl Context {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn lookup(&self, key: &str, id: &str) -> Option<&Entry> {
        self.keys.get(key)?.get(id)
    }

    /// Insert an absent fact. The caller has checked it is absent.
    pub fn insert(&mut self, key: &str, id: &str, content: String, agent: &Arc<str>, cycle: u32) {
        let entry = Entry { content, agent: Arc::clone(agent), cycle };
        let ids = match self.keys.get_mut(key) {
            Some(ids) => ids,
            None => self.keys.entry(key.to_owned()).or_default(),
        };
        if ids.insert(id.to_owned(), entry).is_none() {
            self.len += 1;
        }
    }

    /// Insert the absent facts of `facts` (no `(key, id)` twice) with one search each and return their
    /// `(key, id)` in order; facts already present with the same content are skipped. If one is present with
    /// other content, undo every insertion and hand `facts` back unchanged.
    pub fn insert_absent(
        &mut self,
        mut facts: Vec<Fact>,
        agent: &Arc<str>,
        cycle: u32,
    ) -> Result<Vec<(String, String)>, Vec<Fact>> {
        let mut done = Vec::new();
        let mut conflict = false;
        for (i, f) in facts.iter_mut().enumerate() {
            let ids = match self.keys.get_mut(&f.key) {
                Some(ids) => ids,
                None => self.keys.entry(f.key.clone()).or_default(),
            };
            match ids.entry(f.id.clone()) {
                btree_map::Entry::Vacant(slot) => {
                    let content = std::mem::take(&mut f.content);
                    slot.insert(Entry { content, agent: Arc::clone(agent), cycle });
                    done.push(i);
                }
                btree_map::Entry::Occupied(present) if present.get().content == f.content => {}
                btree_map::Entry::Occupied(_) => {
                    conflict = true;
                    break;
                }
            }
        }
        if conflict {
            for &i in &done {
                let f = &mut facts[i];
                if let Some(ids) = self.keys.get_mut(&f.key) {
                    if let Some(entry) = ids.remove(&f.id) {
                        f.content = entry.content;
                    }
                    if ids.is_empty() {
                        self.keys.remove(&f.key);
                    }
                }
            }
            return Err(facts);
        }
        self.len += done.len();
        let mut done = done.into_iter().peekable();
        let inserted = facts.into_iter().enumerate().filter(|(i, _)| done.next_if_eq(i).is_some());
        Ok(inserted.map(|(_, f)| (f.key, f.id)).collect())
    }

    pub fn set_added<I: IntoIterator<Item = String>>(&mut self, added: BTreeMap<String, I>) {
        // `collect` sorts once and builds each set in bulk, far cheaper than one insert per id.
        self.added = added.into_iter().map(|(key, ids)| (key, ids.into_iter().collect())).collect();
    }

    pub fn extend_added<I: IntoIterator<Item = String>>(&mut self, more: BTreeMap<String, I>) {
        for (key, ids) in more {
            self.added.entry(key).or_default().extend(ids);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = FactRef<'_>> {
        self.keys.iter().flat_map(|(key, ids)| ids.iter().map(move |(id, e)| fact_ref(key, id, e)))
    }
}

fn fact_ref<'a>(key: &'a str, id: &'a str, e: &'a Entry) -> FactRef<'a> {
    FactRef { key, id, content: &e.content, agent: &e.agent, cycle: e.cycle }
}

/// The snapshot a cycle runs against.
#[derive(Debug, Clone)]
pub(crate) struct Frozen {
    pub context: Context,
    pub cycle: u32,
    pub goal: Arc<str>,
}

/// A frozen, cheap-to-clone view of the context as it was when the cycle began.
///
/// Agents, invariants and hosts read through it; it implements the WIT `context.view` resource. Holding a
/// clone past the call is allowed but makes the next merge copy the context, so hosts drop theirs.
#[derive(Debug, Clone)]
pub struct View(pub(crate) Arc<Frozen>);

impl View {
    /// The cycle being run (1-based; 0 before the first).
    pub fn cycle(&self) -> u32 {
        self.0.cycle
    }

    /// The job's goal.
    pub fn goal(&self) -> &str {
        &self.0.goal
    }

    /// The fact `(key, id)`, if present.
    pub fn get(&self, key: &str, id: &str) -> Option<FactRef<'_>> {
        let (k, ids) = self.0.context.keys.get_key_value(key)?;
        let (i, e) = ids.get_key_value(id)?;
        Some(fact_ref(k, i, e))
    }

    /// Every fact under `key`, ordered by id.
    pub fn facts(&self, key: &str) -> impl Iterator<Item = FactRef<'_>> {
        self.0
            .context
            .keys
            .get_key_value(key)
            .into_iter()
            .flat_map(|(k, ids)| ids.iter().map(move |(id, e)| fact_ref(k, id, e)))
    }

    /// The facts under `key` inserted by the previous cycle (the seeds in cycle 1), ordered by id.
    pub fn added(&self, key: &str) -> impl Iterator<Item = FactRef<'_>> {
        let ctx = &self.0.context;
        ctx.added.get(key).into_iter().flatten().filter_map(move |id| self.get(key, id))
    }

    /// How many facts are under `key`.
    pub fn count(&self, key: &str) -> usize {
        self.0.context.keys.get(key).map_or(0, BTreeMap::len)
    }

    /// Every key with at least one fact, in byte order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.context.keys.keys().map(String::as_str)
    }

    /// How many facts the context holds.
    pub fn len(&self) -> usize {
        self.0.context.len()
    }

    /// Whether the context holds no fact.
    pub fn is_empty(&self) -> bool {
        self.0.context.len() == 0
    }

    /// Every fact, ordered by key then id.
    pub fn iter(&self) -> impl Iterator<Item = FactRef<'_>> {
        self.0.context.iter()
    }
}
