//! Every unit's timers, keyed by (unit, purpose), ordered by deadline: all of them behind the
//! loop's one timerfd, which is armed for the earliest.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::registry::UnitId;
use crate::supervisor::Timer;

/// The armed timers.
#[derive(Debug, Default)]
pub struct TimerSet {
    queue: BTreeSet<(Instant, UnitId, Timer)>,
    /// A B-tree, not a hash map: a boot arms a start timeout for each service and cancels it
    /// moments later, and a hash map would keep the room for all of them (50 bytes a service)
    /// for good.
    deadlines: BTreeMap<(UnitId, Timer), Instant>,
}

impl TimerSet {
    /// Arms `timer` of `unit` for `at`, replacing its earlier deadline.
    pub fn set(&mut self, unit: UnitId, timer: Timer, at: Instant) {
        self.cancel(unit, timer);
        self.queue.insert((at, unit, timer));
        self.deadlines.insert((unit, timer), at);
    }

    /// Disarms `timer` of `unit`.
    pub fn cancel(&mut self, unit: UnitId, timer: Timer) {
        if let Some(at) = self.deadlines.remove(&(unit, timer)) {
            self.queue.remove(&(at, unit, timer));
        }
    }

    /// Disarms every timer of `unit` (it is gone).
    pub fn cancel_all(&mut self, unit: UnitId) {
        self.queue.retain(|&(_, u, _)| u != unit);
        self.deadlines.retain(|&(u, _), _| u != unit);
    }

    /// When `timer` of `unit` fires, if it is armed.
    pub fn deadline(&self, unit: UnitId, timer: Timer) -> Option<Instant> {
        self.deadlines.get(&(unit, timer)).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _, _)| *at)
    }

    /// Takes the earliest timer due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(UnitId, Timer)> {
        let &(at, unit, timer) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        self.deadlines.remove(&(unit, timer));
        Some((unit, timer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_of_one_unit_are_independent_and_fire_in_deadline_order() {
        let now = Instant::now();
        let (a, b) = (UnitId::from_raw(1), UnitId::from_raw(2));
        let mut t = TimerSet::default();
        t.set(a, Timer::StopTimeout, now + Duration::from_secs(5));
        t.set(a, Timer::RestartDelay, now + Duration::from_secs(1));
        t.set(b, Timer::Backoff, now + Duration::from_secs(3));
        assert_eq!(t.next(), Some(now + Duration::from_secs(1)));
        // Re-arming replaces that purpose's deadline only.
        t.set(a, Timer::RestartDelay, now + Duration::from_secs(4));
        t.cancel(b, Timer::Backoff);
        t.cancel(b, Timer::Backoff);
        assert_eq!(t.pop_due(now + Duration::from_secs(3)), None);
        let later = now + Duration::from_secs(10);
        assert_eq!(t.pop_due(later), Some((a, Timer::RestartDelay)));
        assert_eq!(
            t.deadline(a, Timer::StopTimeout),
            Some(now + Duration::from_secs(5))
        );
        assert_eq!(t.pop_due(later), Some((a, Timer::StopTimeout)));
        assert_eq!(t.pop_due(later), None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn a_gone_unit_takes_its_timers_with_it() {
        let now = Instant::now();
        let (a, b) = (UnitId::from_raw(1), UnitId::from_raw(2));
        let mut t = TimerSet::default();
        t.set(a, Timer::StopTimeout, now);
        t.set(a, Timer::Backoff, now);
        t.set(b, Timer::Backoff, now);
        t.cancel_all(a);
        assert_eq!(t.pop_due(now), Some((b, Timer::Backoff)));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.deadline(a, Timer::Backoff), None);
    }
}
