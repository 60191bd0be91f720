//! An accept service's running instances, by pid.

use thin_vec::ThinVec;

use super::{Instance, Pid};

/// The running instances in pid order. A sorted list, not a map: every unit has one and only
/// accept services fill it, and an empty list is one pointer where an empty B-tree map is
/// three words. A connection storm's few hundred instances are found by binary search.
#[derive(Debug, Default)]
pub struct Instances(ThinVec<(Pid, Instance)>);

impl Instances {
    fn find(&self, pid: Pid) -> Result<usize, usize> {
        self.0.binary_search_by_key(&pid, |(p, _)| *p)
    }

    /// How many run.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each instance with its pid, in pid order.
    pub fn iter(&self) -> impl Iterator<Item = (Pid, &Instance)> {
        self.0.iter().map(|(pid, i)| (*pid, i))
    }

    /// Their pids, in order.
    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.0.iter().map(|(pid, _)| *pid)
    }

    /// The instance that is process `pid`.
    pub fn get(&self, pid: Pid) -> Option<&Instance> {
        self.find(pid).ok().map(|at| &self.0[at].1)
    }

    /// The instance that is process `pid`, to change.
    pub fn get_mut(&mut self, pid: Pid) -> Option<&mut Instance> {
        self.find(pid).ok().map(|at| &mut self.0[at].1)
    }

    /// Whether process `pid` is one of them.
    pub fn contains(&self, pid: Pid) -> bool {
        self.find(pid).is_ok()
    }

    /// Adds (or replaces) the instance that is process `pid`.
    pub fn insert(&mut self, pid: Pid, instance: Instance) {
        match self.find(pid) {
            Ok(at) => self.0[at].1 = instance,
            Err(at) => self.0.insert(at, (pid, instance)),
        }
    }

    /// Takes out the instance that is process `pid`.
    pub fn remove(&mut self, pid: Pid) -> Option<Instance> {
        let at = self.find(pid).ok()?;
        Some(self.0.remove(at).1)
    }
}

/// In pid order; of two with one pid, the later one.
impl FromIterator<(Pid, Instance)> for Instances {
    fn from_iter<I: IntoIterator<Item = (Pid, Instance)>>(items: I) -> Instances {
        let mut instances = Instances::default();
        for (pid, instance) in items {
            instances.insert(pid, instance);
        }
        instances
    }
}
