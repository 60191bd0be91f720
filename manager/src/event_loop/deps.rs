//! The dependency graph, read from the units' configs as they are now (`after` and `requires`
//! name services; the config has checked every name and refused cycles): what a unit waits for,
//! what waits for it, and what a start pulls in or a stop takes along.

use std::collections::BTreeSet;

use crate::registry::{Registry, UnitId};

/// One edge: the unit at the other end, and whether it is required (not only ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The unit.
    pub unit: UnitId,
    /// `requires`, not only `after`.
    pub required: bool,
}

/// What `id` waits for at start: its `requires` and `after`, each once.
pub fn waits_for(registry: &Registry, id: UnitId) -> Vec<Edge> {
    let Some(unit) = registry.get(id) else {
        return Vec::new();
    };
    let config = unit.supervisor.config();
    config
        .waits_for()
        .filter_map(|name| {
            Some(Edge {
                unit: registry.find(name)?,
                required: config.requires.iter().any(|d| d.name == name),
            })
        })
        .collect()
}

/// The units that wait for `id`: whose `after` or `requires` name it.
pub fn dependents(registry: &Registry, id: UnitId) -> Vec<Edge> {
    let Some(name) = registry.get(id).map(|u| u.name().to_string()) else {
        return Vec::new();
    };
    registry
        .iter()
        .filter_map(|(other, unit)| {
            let config = unit.supervisor.config();
            let required = config.requires.iter().any(|d| d.name == name);
            (required || config.after.iter().any(|d| d.name == name)).then_some(Edge {
                unit: other,
                required,
            })
        })
        .collect()
}

/// `ids` and everything they require, transitively: what a start of them starts.
pub fn with_required(registry: &Registry, ids: &[UnitId]) -> Vec<UnitId> {
    closure(ids, |id| {
        waits_for(registry, id)
            .into_iter()
            .filter(|e| e.required)
            .map(|e| e.unit)
            .collect()
    })
}

/// `ids` and everything that requires them, transitively: what a stop of them stops.
pub fn with_requiring(registry: &Registry, ids: &[UnitId]) -> Vec<UnitId> {
    closure(ids, |id| {
        dependents(registry, id)
            .into_iter()
            .filter(|e| e.required)
            .map(|e| e.unit)
            .collect()
    })
}

/// `start` and whatever `next` leads to from it, each once, in config order (the order units
/// were added: the order a boot starts them in).
fn closure(start: &[UnitId], next: impl Fn(UnitId) -> Vec<UnitId>) -> Vec<UnitId> {
    let mut seen: BTreeSet<UnitId> = BTreeSet::new();
    let mut todo: Vec<UnitId> = start.to_vec();
    while let Some(id) = todo.pop() {
        if seen.insert(id) {
            todo.extend(next(id));
        }
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::unit::Unit;

    fn registry(text: &str) -> Registry {
        let loaded = config::load_str("t.toml", text);
        let mut r = Registry::default();
        for service in loaded
            .config
            .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics))
            .services
        {
            r.insert(Unit::new(service, Vec::new(), 1024));
        }
        r
    }

    const GRAPH: &str = r#"
[service.db]
exec = ["/bin/x"]
[service.cache]
exec = ["/bin/x"]
[service.app]
exec = ["/bin/x"]
requires = ["db"]
after = ["cache"]
[service.web]
exec = ["/bin/x"]
requires = ["app"]
"#;

    fn names(r: &Registry, ids: Vec<UnitId>) -> Vec<String> {
        ids.iter()
            .map(|id| r.get(*id).unwrap().name().to_string())
            .collect()
    }

    #[test]
    fn edges_both_ways() {
        let r = registry(GRAPH);
        let id = |n| r.find(n).unwrap();
        assert_eq!(
            waits_for(&r, id("app")),
            [
                Edge {
                    unit: id("db"),
                    required: true
                },
                Edge {
                    unit: id("cache"),
                    required: false
                }
            ]
        );
        assert_eq!(
            names(
                &r,
                dependents(&r, id("cache")).iter().map(|e| e.unit).collect()
            ),
            ["app"]
        );
    }

    #[test]
    fn a_start_pulls_in_what_is_required_and_a_stop_takes_what_requires() {
        let r = registry(GRAPH);
        let id = |n| r.find(n).unwrap();
        // `after` only orders: cache is not pulled in.
        assert_eq!(
            names(&r, with_required(&r, &[id("web")])),
            ["db", "app", "web"]
        );
        assert_eq!(
            names(&r, with_requiring(&r, &[id("db")])),
            ["db", "app", "web"]
        );
        assert_eq!(names(&r, with_requiring(&r, &[id("cache")])), ["cache"]);
    }
}
