//! Reload: the whole new config is validated first, and a broken one changes nothing. Then new
//! services start, removed ones stop (their sockets close and their files go), changed ones
//! restart, and unchanged ones are not touched. SIGHUP and `stewardctl reload` both come here.

use steward_protocol::control::Reply;

use super::{Manager, Unit};
use crate::config;
use crate::log;
use crate::sockets::{self, Listener};
use crate::supervisor::Event;

/// What a reload left for a service to do once it is at rest.
#[derive(Debug)]
pub enum Pending {
    /// It is gone from the config.
    Remove,
    /// Its config changed: take this one, then start again.
    Replace(Box<config::Service>),
}

/// Whether two configs of a service are the same but for where they were written.
fn same(old: &config::Service, new: &config::Service) -> bool {
    let mut new = new.clone();
    new.origin = old.origin.clone();
    *old == new
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

        let names: Vec<String> = config.services.iter().map(|s| s.name.clone()).collect();
        let removed: Vec<usize> = (0..self.units.len())
            .filter(|&id| !self.units[id].retired && !names.contains(&self.units[id].name))
            .collect();
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for service in config.services {
            match self.find(&service.name) {
                None => added.push(service),
                Some(id) if !same(&self.units[id].service.config, &service) => {
                    changed.push((id, service))
                }
                Some(_) => {}
            }
        }
        // The new services' sockets, before anything changes: if one cannot be made, the
        // reload is refused whole.
        let mut new_sockets: Vec<Vec<Listener>> = Vec::new();
        for service in &added {
            match sockets::open_service(service, &[]) {
                Ok(listeners) => new_sockets.push(listeners),
                Err(e) => {
                    sockets::remove_files(new_sockets.iter().flatten());
                    log::manager(format_args!("reload: {e}; nothing was changed"));
                    return Reply::Error {
                        message: format!("{e}; nothing was changed"),
                    };
                }
            }
        }

        self.log_buffer = config.manager.log_buffer;
        for unit in &mut self.units {
            unit.log.set_capacity(self.log_buffer);
        }
        let removed_names: Vec<String> = removed
            .iter()
            .map(|&id| self.units[id].name.clone())
            .collect();
        let restarted: Vec<String> = changed.iter().map(|(_, s)| s.name.clone()).collect();
        let added_names: Vec<String> = added.iter().map(|s| s.name.clone()).collect();

        for id in removed {
            self.units[id].pending = Some(Pending::Remove);
            self.settle_or_stop(id);
        }
        for (id, service) in changed {
            self.units[id].pending = Some(Pending::Replace(Box::new(service)));
            self.settle_or_stop(id);
        }
        for (service, listeners) in added.into_iter().zip(new_sockets) {
            let autostart = service.autostart;
            self.units
                .push(Unit::new(service, listeners, self.log_buffer));
            let id = self.units.len() - 1;
            self.open_log_pipes(id);
            if autostart && !self.shutting_down {
                self.dispatch(id, Event::Start);
            }
        }
        crate::sys::trim_heap();
        log::manager(format_args!(
            "reloaded: {} added, {} removed, {} restarted",
            added_names.len(),
            removed_names.len(),
            restarted.len()
        ));
        Reply::Reloaded {
            added: added_names,
            removed: removed_names,
            restarted,
        }
    }

    /// Stops a service a reload changed or removed, or finishes at once if it is at rest.
    fn settle_or_stop(&mut self, id: usize) {
        if self.units[id].service.state.at_rest() {
            self.finish_pending(id);
        } else {
            self.dispatch(id, Event::Stop);
        }
    }

    /// Does what a reload left for a service now at rest.
    pub(super) fn finish_pending(&mut self, id: usize) {
        let Some(pending) = self.units[id].pending.take() else {
            return;
        };
        match pending {
            Pending::Remove => {
                let unit = &mut self.units[id];
                sockets::remove_files(unit.sockets.iter());
                unit.sockets.clear();
                for pipe in unit.pipes.drain(..) {
                    let _ = self.epoll.delete(&pipe.fd);
                }
                unit.writers = None;
                unit.retired = true;
                self.cgroups.remove(&unit.name);
                log::service(&unit.name, format_args!("removed from the config"));
            }
            Pending::Replace(service) => {
                let unit = &mut self.units[id];
                // Unchanged sockets stay open (their clients queue); the others are closed
                // before the new ones bind, since a new one may reuse the path.
                let (reused, stale): (Vec<Listener>, Vec<Listener>) =
                    std::mem::take(&mut unit.sockets)
                        .into_iter()
                        .partition(|l| service.sockets.contains(&l.config));
                sockets::remove_files(stale.iter());
                drop(stale);
                let reused: Vec<&Listener> = reused.iter().collect();
                match sockets::open_service(&service, &reused) {
                    Ok(listeners) => unit.sockets = listeners,
                    Err(e) => log::service(&unit.name, format_args!("reload: {e}")),
                }
                let autostart = service.autostart;
                unit.service.config = *service;
                self.open_log_pipes(id);
                if autostart && !self.shutting_down {
                    self.dispatch(id, Event::Start);
                }
            }
        }
    }
}
