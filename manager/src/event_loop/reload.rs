//! Reload: a plan, then its application. The whole new config is validated first and a broken
//! one changes nothing; [`plan`] then works out, without touching anything, which services are
//! new, gone or changed; applying it makes every socket the new config needs before it changes
//! anything (so a socket that cannot be made refuses the reload whole), then new services
//! start, removed ones stop and go (their sockets close and their files go), changed ones
//! restart with their new config, and unchanged ones are not touched. SIGHUP and
//! `stewardctl reload` both come here.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use steward_protocol::control::Reply;

use super::Manager;
use super::deps;
use super::jobs::Job;
use crate::config::{self, SocketAddress};
use crate::log;
use crate::registry::{Registry, UnitId};
use crate::sockets::{self, Held, Staged};
use crate::supervisor::{Event, Replacement, Resume};
use crate::unit::Unit;

/// What a reload does.
#[derive(Debug)]
pub struct Plan {
    /// New services, in config order.
    pub add: Vec<config::Service>,
    /// Units gone from the config.
    pub remove: Vec<UnitId>,
    /// Units whose config changed, with their new one.
    pub change: Vec<(UnitId, config::Service)>,
    /// `[manager] log_buffer`.
    pub log_buffer: u64,
    /// `[manager] log_dir` and its companions.
    pub log_files: Option<crate::logfile::Settings>,
}

/// Why a reload cannot be planned now.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy {
    /// Services an earlier reload is still changing or removing.
    pub settling: Vec<String>,
}

/// The reload `config` asks of the units in `registry`. A unit an earlier reload is still
/// stopping (to change or remove it), or is about to (`retiring`: removals waiting for their
/// turn to stop), cannot be planned for again until it has stopped.
pub fn plan(
    registry: &Registry,
    retiring: &BTreeSet<UnitId>,
    config: config::Config,
) -> Result<Plan, Busy> {
    let names: HashSet<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    let settling =
        |id: UnitId, unit: &Unit| unit.supervisor.settling_from_reload() || retiring.contains(&id);
    let mut busy = Vec::new();
    // Already going (an earlier reload removed it) is going: nothing to plan.
    let remove = registry
        .iter()
        .filter(|&(id, u)| !names.contains(u.name()) && !settling(id, u))
        .map(|(id, _)| id)
        .collect();
    let mut add = Vec::new();
    let mut change = Vec::new();
    for service in config.services {
        let found = registry
            .find(&service.name)
            .and_then(|id| Some((id, registry.get(id)?)));
        match found {
            None => add.push(service),
            Some((id, unit)) if settling(id, unit) => busy.push(service.name),
            Some((id, unit)) if !unit.supervisor.config().same_as(&service) => {
                change.push((id, service))
            }
            Some(_) => {}
        }
    }
    if !busy.is_empty() {
        return Err(Busy { settling: busy });
    }
    Ok(Plan {
        add,
        remove,
        change,
        log_buffer: config.manager.log_buffer,
        log_files: crate::logfile::Settings::of(&config.manager),
    })
}

/// The unix socket paths `listeners` are bound at.
fn paths<'a>(listeners: impl Iterator<Item = &'a sockets::Listener>) -> HashSet<PathBuf> {
    listeners
        .filter_map(|l| match &l.config.address {
            SocketAddress::Unix(path) => Some(path.clone()),
            SocketAddress::Inet(_) => None,
        })
        .collect()
}

impl Manager {
    pub(super) fn reload(&mut self) -> Reply {
        let loaded = match config::load(&self.config_path) {
            Ok(loaded) => loaded,
            Err(e) => {
                log::manager(format_args!("reload: {e}; nothing was changed"));
                return Reply::ReloadFailed {
                    errors: vec![e.to_string()],
                };
            }
        };
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| !d.warning)
            .map(|d| d.to_string())
            .collect();
        let Some(config) = loaded.config else {
            for e in &errors {
                log::manager(format_args!("reload: {e}"));
            }
            log::manager(format_args!(
                "reload: the config has errors; nothing was changed"
            ));
            return Reply::ReloadFailed { errors };
        };
        self.reload_with(config, &[], loaded.sources)
    }

    /// After a reexec: the config on disk, applied as a boot applies it — what is valid as a
    /// reload would, and each service whose table has errors refused (stopped first if it
    /// runs), so that the next reexec reads the same config the services run.
    pub(super) fn reload_after_takeover(&mut self) {
        let loaded = match config::load(&self.config_path) {
            Ok(loaded) => loaded,
            Err(e) => {
                log::manager(format_args!("{e}; the config was not re-read"));
                return;
            }
        };
        for d in loaded.diagnostics.iter().filter(|d| !d.warning) {
            log::manager(format_args!("{d}"));
        }
        let config::Confined { mut config, broken } = loaded.confined;
        // A refused service takes part in the plan as its stand-in: added, changed into one
        // (it ran a table that is broken now), or unchanged (refused already).
        config
            .services
            .extend(broken.iter().map(config::Broken::service));
        for b in &broken {
            if let Some(unit) = self
                .registry
                .find(&b.name)
                .and_then(|id| self.registry.get_mut(id))
            {
                unit.supervisor.refuse_again(&b.reason());
            }
        }
        if let Reply::Error { message } = self.reload_with(config, &broken, loaded.sources) {
            log::manager(format_args!(
                "the config on disk was not applied: {message}"
            ));
        }
    }

    /// Plans and applies `config`; `refused` are the services of it that are stand-ins.
    fn reload_with(
        &mut self,
        config: config::Config,
        refused: &[config::Broken],
        sources: Vec<(PathBuf, String)>,
    ) -> Reply {
        let retiring: BTreeSet<UnitId> = self
            .stop_jobs
            .iter()
            .filter(|&(_, &job)| job == Job::Retire)
            .map(|(&id, _)| id)
            .collect();
        let plan = match plan(&self.registry, &retiring, config) {
            Ok(plan) => plan,
            Err(Busy { settling }) => {
                let message = format!(
                    "an earlier reload is still being applied ({} stopping); try again once they have stopped",
                    settling.join(", ")
                );
                log::manager(format_args!("reload: {message}; nothing was changed"));
                return Reply::Error { message };
            }
        };
        match self.apply(plan, refused) {
            Ok(reply) => {
                self.config_sources = sources.into();
                self.head_changed = true;
                reply
            }
            Err(e) => {
                log::manager(format_args!("reload: {e}; nothing was changed"));
                Reply::Error {
                    message: format!("{e}; nothing was changed"),
                }
            }
        }
    }

    /// The sockets of every added and changed service, in that order: made (or kept) and put
    /// in place, or, if one cannot be made, none.
    fn stage(
        &self,
        add: &[config::Service],
        change: &[(UnitId, config::Service)],
    ) -> Result<Vec<Vec<sockets::Listener>>, sockets::SocketError> {
        let held = Held::of(self.registry.iter().flat_map(|(_, u)| u.io.sockets.iter()));
        let current = |id: UnitId| self.registry.get(id).map_or(&[][..], |u| &u.io.sockets[..]);
        let wanted = add
            .iter()
            .map(|s| (s, &[][..]))
            .chain(change.iter().map(|(id, s)| (s, current(*id))));
        let mut staged: Vec<Staged> = Vec::new();
        for (service, sockets) in wanted {
            match Staged::for_service(service, sockets, &held) {
                Ok(s) => staged.push(s),
                Err(e) => {
                    staged.into_iter().for_each(Staged::abandon);
                    return Err(e);
                }
            }
        }
        Ok(staged.into_iter().map(Staged::commit).collect())
    }

    /// Gives a changed unit its new config and sockets (made in place once it has stopped);
    /// the files of its old sockets go then, but those `taken` by a socket of this reload.
    fn reconfigure(
        &mut self,
        id: UnitId,
        config: config::Service,
        sockets: Vec<sockets::Listener>,
        taken: &HashSet<PathBuf>,
        start: bool,
    ) {
        let old = self
            .registry
            .get(id)
            .map(|u| paths(u.io.sockets.iter()))
            .unwrap_or_default();
        let stale = old.difference(taken).cloned().collect();
        let replacement = Replacement {
            then: if start && config.autostart {
                Resume::Start
            } else {
                Resume::Rest
            },
            config,
            sockets,
            stale,
        };
        self.dispatch(id, Event::Reconfigure(Box::new(replacement)));
    }

    fn set_log_buffer(&mut self, bytes: u64) {
        self.log_buffer = bytes;
        for unit in self.registry.units_mut() {
            unit.io.output.set_capacity(bytes);
        }
    }

    /// Makes every socket the plan needs, then carries it out; a socket that cannot be made
    /// refuses the whole plan before anything changed.
    fn apply(
        &mut self,
        plan: Plan,
        refused: &[config::Broken],
    ) -> Result<Reply, sockets::SocketError> {
        let Plan {
            add,
            remove,
            change,
            log_buffer,
            log_files,
        } = plan;
        let broken = |name: &str| refused.iter().find(|b| b.name == name);
        let (add_refused, add): (Vec<_>, Vec<_>) =
            add.into_iter().partition(|s| broken(&s.name).is_some());
        let (change_refused, change): (Vec<_>, Vec<_>) = change
            .into_iter()
            .partition(|(_, s)| broken(&s.name).is_some());
        let mut committed = self.stage(&add, &change)?;
        // Accepted: from here on nothing refuses.
        let taken = paths(committed.iter().flatten());
        let changed_sockets = committed.split_off(add.len());

        self.set_log_buffer(log_buffer);
        self.set_log_files(log_files);
        let name = |id: &UnitId| self.registry.get(*id).map(|u| u.name().to_string());
        let removed: Vec<String> = remove.iter().filter_map(name).collect();
        let restarted: Vec<String> = change.iter().map(|(_, s)| s.name.clone()).collect();
        let added: Vec<String> = add.iter().map(|s| s.name.clone()).collect();
        let start = !self.shutting_down();

        // The new units first, so that a unit going away leaves alone a socket file one of
        // them took over; they start after the others stopped or changed.
        let added_ids: Vec<(UnitId, bool)> = add
            .into_iter()
            .zip(committed)
            .map(|(service, sockets)| {
                let autostart = service.autostart;
                let id = self
                    .registry
                    .insert(Unit::new(service, sockets, log_buffer));
                (id, autostart)
            })
            .collect();
        // Removed ones stop in reverse dependency order, as at shutdown.
        self.queue(&remove, Job::Retire);
        for ((id, config), sockets) in change.into_iter().zip(changed_sockets) {
            self.reconfigure(id, config, sockets, &taken, start);
        }
        let mut starting = Vec::new();
        for (id, autostart) in added_ids {
            self.open_log_pipes(id);
            if autostart && start {
                starting.push(id);
            }
        }
        let mut refusals = Vec::new();
        for b in add_refused.iter().filter_map(|s| broken(&s.name)) {
            let id = self.registry.insert(Unit::refused(b, log_buffer));
            log::service(&b.name, format_args!("not started: {}", b.reason()));
            self.open_log_pipes(id);
            refusals.push(b.name.clone());
        }
        for (id, stand_in) in change_refused {
            let Some(b) = broken(&stand_in.name) else {
                continue;
            };
            let stale = self
                .registry
                .get(id)
                .map(|u| paths(u.io.sockets.iter()))
                .unwrap_or_default()
                .difference(&taken)
                .cloned()
                .collect();
            let replacement = Replacement {
                config: stand_in,
                sockets: Vec::new(),
                stale,
                then: Resume::Refuse(b.reason()),
            };
            self.dispatch(id, Event::Reconfigure(Box::new(replacement)));
            refusals.push(b.name.clone());
        }
        // As at boot: what a new service requires starts with it.
        for id in deps::with_required(&self.registry, &starting) {
            self.dispatch(id, Event::Start);
        }
        if !refusals.is_empty() {
            log::manager(format_args!(
                "refused for errors in their config: {}",
                refusals.join(", ")
            ));
        }
        crate::sys::trim_heap();
        let counts = (added.len(), removed.len(), restarted.len());
        log::manager(format_args!(
            "reloaded: {} added, {} removed, {} restarted",
            counts.0, counts.1, counts.2
        ));
        Ok(Reply::Reloaded {
            added,
            removed,
            restarted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> config::Config {
        let loaded = config::load_str("t.toml", text);
        loaded
            .config
            .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics))
    }

    fn registry(text: &str) -> Registry {
        let mut r = Registry::default();
        for service in config(text).services {
            r.insert(Unit::new(service, Vec::new(), 1024));
        }
        r
    }

    const BEFORE: &str = "
[service.keep]
exec = [\"/bin/sleep\", \"1\"]
[service.change]
exec = [\"/bin/sleep\", \"1\"]
[service.drop]
exec = [\"/bin/sleep\", \"1\"]
";

    #[test]
    fn a_plan_adds_removes_and_changes_what_differs_and_nothing_else() {
        let r = registry(BEFORE);
        let after = config(
            "
[manager]
log_buffer = \"1K\"
[service.keep]
exec = [\"/bin/sleep\", \"1\"]

[service.change]
exec = [\"/bin/sleep\", \"2\"]
[service.new]
exec = [\"/bin/sleep\", \"1\"]
",
        );
        let plan = plan(&r, &BTreeSet::new(), after).unwrap();
        let names = |ids: &[UnitId]| -> Vec<String> {
            ids.iter()
                .map(|id| r.get(*id).unwrap().name().to_string())
                .collect()
        };
        assert_eq!(names(&plan.remove), ["drop"]);
        assert_eq!(
            plan.change
                .iter()
                .map(|(id, s)| (r.get(*id).unwrap().name(), s.exec.iter().nth(1).unwrap()))
                .collect::<Vec<_>>(),
            [("change", "2")]
        );
        assert_eq!(
            plan.add.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["new"]
        );
        assert_eq!(plan.log_buffer, 1024);
    }

    #[test]
    fn a_service_an_earlier_reload_is_removing_cannot_be_planned_again() {
        let r = registry(BEFORE);
        let drop = r.find("drop").unwrap();
        let again = config(BEFORE);
        let busy = plan(&r, &BTreeSet::from([drop]), again).unwrap_err();
        assert_eq!(busy.settling, ["drop"]);
        // Gone from the new config too: it is going already, nothing to plan.
        let without = config(
            "[service.keep]\nexec = [\"/bin/sleep\", \"1\"]\n[service.change]\nexec = [\"/bin/sleep\", \"1\"]\n",
        );
        let plan = plan(&r, &BTreeSet::from([drop]), without).unwrap();
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn the_same_config_written_elsewhere_plans_nothing() {
        let r = registry(BEFORE);
        let moved = format!("\n\n# moved down\n{BEFORE}");
        let plan = plan(&r, &BTreeSet::new(), config(&moved)).unwrap();
        assert!(plan.add.is_empty() && plan.remove.is_empty() && plan.change.is_empty());
    }
}
