//! A map keyed by pid that holds one entry inline, for what a unit keeps per process in
//! flight: nearly always one process at a time, and a B-tree would allocate a node (a hundred
//! bytes) for it at every spawn and free it moments later. At boot, each of those nodes freed
//! stays behind as a hole among the units' records, which nothing allocates into again.

use std::collections::BTreeMap;

use crate::supervisor::Pid;

/// Entries by pid, in pid order.
#[derive(Debug, Default)]
pub enum PidMap<V> {
    /// None.
    #[default]
    Empty,
    /// One, inline.
    One(Pid, V),
    /// Two or more.
    Many(BTreeMap<Pid, V>),
}

impl<V> PidMap<V> {
    /// Sets the entry of `pid`; returns the one it replaced.
    pub fn insert(&mut self, pid: Pid, value: V) -> Option<V> {
        match std::mem::take(self) {
            PidMap::Empty => {
                *self = PidMap::One(pid, value);
                None
            }
            PidMap::One(p, old) if p == pid => {
                *self = PidMap::One(pid, value);
                Some(old)
            }
            PidMap::One(p, v) => {
                *self = PidMap::Many(BTreeMap::from([(p, v), (pid, value)]));
                None
            }
            PidMap::Many(mut map) => {
                let old = map.insert(pid, value);
                *self = PidMap::Many(map);
                old
            }
        }
    }

    /// The entry of `pid`.
    pub fn get(&self, pid: Pid) -> Option<&V> {
        match self {
            PidMap::Empty => None,
            PidMap::One(p, v) => (*p == pid).then_some(v),
            PidMap::Many(map) => map.get(&pid),
        }
    }

    /// Takes the entry of `pid` out. The B-tree goes once one entry is left: a B-tree emptied
    /// keeps its root node.
    pub fn remove(&mut self, pid: Pid) -> Option<V> {
        match std::mem::take(self) {
            PidMap::Empty => None,
            PidMap::One(p, v) if p == pid => Some(v),
            one @ PidMap::One(..) => {
                *self = one;
                None
            }
            PidMap::Many(mut map) => {
                let old = map.remove(&pid);
                *self = match map.len() {
                    0 => PidMap::Empty,
                    1 => match map.pop_first() {
                        Some((p, v)) => PidMap::One(p, v),
                        None => PidMap::Empty,
                    },
                    _ => PidMap::Many(map),
                };
                old
            }
        }
    }

    /// The entries, in pid order.
    pub fn iter(&self) -> impl Iterator<Item = (Pid, &V)> {
        let (one, many) = match self {
            PidMap::Empty => (None, None),
            PidMap::One(p, v) => (Some((*p, v)), None),
            PidMap::Many(map) => (None, Some(map.iter().map(|(p, v)| (*p, v)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// The values, in pid order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<V> FromIterator<(Pid, V)> for PidMap<V> {
    fn from_iter<I: IntoIterator<Item = (Pid, V)>>(entries: I) -> Self {
        let mut map = PidMap::Empty;
        for (pid, value) in entries {
            map.insert(pid, value);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(raw: i32) -> Pid {
        Pid::new(raw).unwrap()
    }

    fn entries(map: &PidMap<&'static str>) -> Vec<(i32, &'static str)> {
        map.iter().map(|(p, v)| (p.raw(), *v)).collect()
    }

    #[test]
    fn one_entry_is_inline_and_more_are_a_tree_in_pid_order() {
        let mut map = PidMap::default();
        assert!(matches!(map, PidMap::Empty));
        assert_eq!(map.insert(pid(7), "a"), None);
        assert!(matches!(map, PidMap::One(..)));
        assert_eq!(map.insert(pid(7), "b"), Some("a"));
        assert_eq!(map.get(pid(7)), Some(&"b"));
        assert_eq!(map.get(pid(8)), None);
        map.insert(pid(9), "c");
        map.insert(pid(3), "d");
        assert!(matches!(map, PidMap::Many(_)));
        assert_eq!(entries(&map), [(3, "d"), (7, "b"), (9, "c")]);
        assert_eq!(map.values().count(), 3);
    }

    #[test]
    fn removing_down_to_one_entry_lets_the_tree_go() {
        let mut map: PidMap<&str> = [(pid(1), "a"), (pid(2), "b"), (pid(3), "c")]
            .into_iter()
            .collect();
        assert_eq!(map.remove(pid(4)), None);
        assert_eq!(map.remove(pid(2)), Some("b"));
        assert!(matches!(map, PidMap::Many(_)));
        assert_eq!(map.remove(pid(1)), Some("a"));
        assert!(matches!(map, PidMap::One(..)));
        assert_eq!(entries(&map), [(3, "c")]);
        assert_eq!(map.remove(pid(1)), None);
        assert_eq!(entries(&map), [(3, "c")]);
        assert_eq!(map.remove(pid(3)), Some("c"));
        assert!(matches!(map, PidMap::Empty));
        assert_eq!(map.remove(pid(3)), None);
    }
}
