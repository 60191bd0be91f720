//! Every unit the manager supervises, by a typed id that is never reused, and the indexes into
//! them: names and live pids. A unit a reload removed is removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::supervisor::Pid;
use crate::unit::Unit;

/// A unit's id: the order it was added in (config order at boot), never reused, so that an
/// event about a unit that is gone (a token from epoll, a timer) can never reach another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId(u32);

impl UnitId {
    /// The number, for packing into an epoll token.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// The id with this number.
    pub fn from_raw(raw: u32) -> UnitId {
        UnitId(raw)
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The units.
#[derive(Default)]
pub struct Registry {
    /// Boxed: a B-tree node holds eleven values inline and is half full at worst, so a unit
    /// (over a kilobyte) kept inline would cost up to twice its size.
    units: BTreeMap<UnitId, Box<Unit>>,
    /// Every id, ordered by the unit's name, then by id (a name a reload dropped and added
    /// again can be two units for a while: the newer is the one found). Four bytes a unit,
    /// where a map keyed by a copy of each name cost a hundred; the lookup (by name: control
    /// commands, dependencies) reads the names in the units.
    names: Vec<UnitId>,
    /// Which unit each live process (a main process or an accept instance) belongs to.
    pids: HashMap<Pid, UnitId>,
    next: u32,
    /// Units added, removed or handed out to change since [`Registry::take_changed`]: what
    /// the panic-recovery snapshot must save again.
    changed: BTreeSet<UnitId>,
}

/// The name of unit `id`, which is in `units` (every id in `names` is).
fn name_of(units: &BTreeMap<UnitId, Box<Unit>>, id: UnitId) -> &str {
    units.get(&id).map_or("", |unit| unit.name())
}

impl Registry {
    /// Adds a unit. A unit of the same name may still be there (one a reload dropped, not
    /// gone yet): from now on, this one is found by the name.
    pub fn insert(&mut self, unit: Unit) -> UnitId {
        let id = UnitId(self.next);
        self.next += 1;
        // The newest id: after every unit of the same name.
        let at = self
            .names
            .partition_point(|&other| name_of(&self.units, other) <= unit.name());
        self.names.insert(at, id);
        self.units.insert(id, Box::new(unit));
        self.changed.insert(id);
        id
    }

    /// Removes a unit, with its name and pids.
    pub fn remove(&mut self, id: UnitId) -> Option<Unit> {
        let name = self.units.get(&id)?.name();
        let at = self
            .names
            .partition_point(|&other| (name_of(&self.units, other), other) < (name, id));
        if self.names.get(at) == Some(&id) {
            self.names.remove(at);
        }
        let unit = self.units.remove(&id)?;
        self.changed.insert(id);
        self.pids.retain(|_, owner| *owner != id);
        Some(*unit)
    }

    /// The unit with this id.
    pub fn get(&self, id: UnitId) -> Option<&Unit> {
        self.units.get(&id).map(|unit| &**unit)
    }

    /// The unit with this id, to change.
    pub fn get_mut(&mut self, id: UnitId) -> Option<&mut Unit> {
        let unit = self.units.get_mut(&id)?;
        self.changed.insert(id);
        Some(&mut **unit)
    }

    /// The unit of that name.
    pub fn find(&self, name: &str) -> Option<UnitId> {
        let after = self
            .names
            .partition_point(|&id| name_of(&self.units, id) <= name);
        let id = *self.names.get(after.checked_sub(1)?)?;
        (name_of(&self.units, id) == name).then_some(id)
    }

    /// Every id, in the order the units were added.
    pub fn ids(&self) -> Vec<UnitId> {
        self.units.keys().copied().collect()
    }

    /// Every unit with its id, in order.
    pub fn iter(&self) -> impl Iterator<Item = (UnitId, &Unit)> {
        self.units.iter().map(|(id, unit)| (*id, &**unit))
    }

    /// Every unit, to change.
    pub fn units_mut(&mut self) -> impl Iterator<Item = &mut Unit> {
        self.changed.extend(self.units.keys().copied());
        self.units.values_mut().map(|unit| &mut **unit)
    }

    /// The units that may have changed since the last call (some may be gone).
    pub fn take_changed(&mut self) -> BTreeSet<UnitId> {
        std::mem::take(&mut self.changed)
    }

    /// Whether unit `id` was handed out to change since the last [`Registry::take_changed`].
    pub fn is_changed(&self, id: UnitId) -> bool {
        self.changed.contains(&id)
    }

    /// Takes back the mark [`Registry::get_mut`] left: for a change the snapshot does not
    /// carry (a watchdog ping moves only its time, which a restored run starts afresh), so
    /// that a service pinging hard does not have itself saved again at every ping.
    pub fn unmark(&mut self, id: UnitId) {
        self.changed.remove(&id);
    }

    /// How many units there are.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Records that `pid` is a process of unit `id`.
    pub fn claim(&mut self, pid: Pid, id: UnitId) {
        self.pids.insert(pid, id);
    }

    /// The unit `pid` belongs to.
    pub fn owner(&self, pid: Pid) -> Option<UnitId> {
        self.pids.get(&pid).copied()
    }

    /// Every live process with its unit.
    pub fn processes(&self) -> Vec<(Pid, UnitId)> {
        self.pids.iter().map(|(&pid, &id)| (pid, id)).collect()
    }

    /// Forgets `pid` (it was reaped); returns whose it was.
    pub fn release(&mut self, pid: Pid) -> Option<UnitId> {
        self.pids.remove(&pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn unit(name: &str) -> Unit {
        let text = format!("[service.{name}]\nexec = [\"/bin/x\"]\n");
        let loaded = config::load_str("t.toml", &text);
        Unit::new(loaded.config.unwrap().services.remove(0), Vec::new(), 1024)
    }

    #[test]
    fn ids_are_never_reused_and_a_removed_unit_is_gone() {
        let mut r = Registry::default();
        let a = r.insert(unit("a"));
        let b = r.insert(unit("b"));
        r.claim(Pid::new(7).unwrap(), a);
        assert_eq!(r.find("a"), Some(a));
        assert!(r.remove(a).is_some());
        assert_eq!(r.find("a"), None);
        assert_eq!(
            r.release(Pid::new(7).unwrap()),
            None,
            "its pids went with it"
        );
        let c = r.insert(unit("a"));
        assert_ne!(c, a, "a new unit of the same name is another unit");
        assert_eq!(r.ids(), [b, c]);
        assert!(r.get(a).is_none());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_name_finds_its_newest_unit_among_many() {
        let mut r = Registry::default();
        let names: Vec<String> = (0..50).map(|i| format!("s{}", (i * 37) % 50)).collect();
        let ids: Vec<UnitId> = names.iter().map(|n| r.insert(unit(n))).collect();
        for (name, id) in names.iter().zip(&ids) {
            assert_eq!(r.find(name), Some(*id), "{name}");
        }
        assert_eq!(r.find("s"), None);
        assert_eq!(r.find("s50"), None);
        assert_eq!(r.find(""), None);
        // One dropped by a reload, not gone yet, and added again.
        let old = r.find("s7").unwrap();
        let new = r.insert(unit("s7"));
        assert_eq!(r.find("s7"), Some(new));
        assert!(r.remove(old).is_some());
        assert_eq!(r.find("s7"), Some(new));
        assert!(r.remove(new).is_some());
        assert_eq!(r.find("s7"), None);
        assert_eq!(
            r.find("s8"),
            Some(ids[names.iter().position(|n| n == "s8").unwrap()])
        );
    }
}
