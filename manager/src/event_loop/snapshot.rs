//! The panic-recovery snapshot (see `crate::recovery`): after every event the loop handles,
//! the units the registry handed out to change are saved again, so that a panic finds the
//! state as it was before the event that panicked.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use steward_protocol::reexec as saved;

use super::Manager;
use crate::log;
use crate::recovery::{self, Snapshot};
use crate::supervisor::Timer;
use crate::unit::Output;

impl Manager {
    /// Saves again what changed since the last call; nearly free when nothing did.
    pub(super) fn snapshot(&mut self) {
        let changed = self.registry.take_changed();
        let head_changed = std::mem::take(&mut self.head_changed);
        let stop_jobs = self.saved_stop_jobs();
        let now = Instant::now();
        recovery::update(|slot| {
            if head_changed || slot.is_none() {
                // The units saved are kept, and what their timers are counted from.
                let (units, base) = slot
                    .take()
                    .map_or_else(|| (BTreeMap::new(), now), |s| (s.units, s.base));
                *slot = Some(Snapshot {
                    head: self.bare_head(),
                    config: Rc::clone(&self.config_sources),
                    units,
                    base,
                    exe: self.upgrade.exe.clone().into_os_string(),
                    args: self.upgrade.args.clone(),
                });
            }
            let Some(snapshot) = slot.as_mut() else {
                return;
            };
            if snapshot.head.stop_jobs != stop_jobs {
                snapshot.head.stop_jobs = stop_jobs;
            }
            for id in changed {
                let Some(unit) = self.registry.get(id) else {
                    snapshot.units.remove(&id);
                    continue;
                };
                // Counted from the base, not from now (see `recovery::SavedUnit`); one due
                // before the base is due at once after a recovery, as it would have been.
                let timers: Vec<(Timer, Duration)> = Timer::ALL
                    .into_iter()
                    .filter_map(|t| {
                        let due = self.timers.deadline(id, t)?;
                        Some((t, due.saturating_duration_since(snapshot.base)))
                    })
                    .collect();
                // The fds are named by number in the saved unit; the hook hands them over.
                let mut keep = Vec::new();
                let saved = unit.save(now, &timers, &mut keep, Output::Without);
                match saved::encode_service(&saved) {
                    Ok(bytes) => {
                        snapshot.units.insert(id, bytes.into_boxed_slice());
                    }
                    // Cannot happen (the encoding has no limit a unit could reach); if it
                    // did, a recovery would find the unit as it was at its last change.
                    Err(e) => log::service(
                        unit.name(),
                        format_args!("cannot save the unit for panic recovery: {e}"),
                    ),
                }
            }
        });
    }
}
