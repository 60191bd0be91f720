//! The config as it is written: one serializable struct per table, each field a key under its
//! TOML name, `None` (or empty) for a key left out. Tools that write steward configs
//! (`stewardctl import`) build these and let serde and the `toml` crate write the text, so
//! they name no key and quote no value by hand. The tests below keep this schema and the parser
//! in step: every key here parses without an error, and the keys here are exactly the keys
//! the parser's structs document (the list the man page is made from).

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// A whole config file: its services, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Document {
    /// `[service.NAME]`, in order.
    #[serde(serialize_with = "pairs", skip_serializing_if = "Vec::is_empty")]
    pub service: Vec<(String, ServiceTable)>,
}

/// One `[service.NAME]` table (see steward.toml(5) for what each key does).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct ServiceTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_instances: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_pool: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplementary_groups: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// In order; a later assignment of a name replaces an earlier one where it stood.
    #[serde(
        serialize_with = "optional_pairs",
        skip_serializing_if = "Option::is_none"
    )]
    pub environment: Option<Vec<(String, String)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inherit_environment: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub umask: Option<String>,
    /// Bytes, or with K, M or G.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_max: Option<u64>,
    /// rlimit name (`nofile`, …) to value.
    #[serde(
        serialize_with = "optional_pairs",
        skip_serializing_if = "Option::is_none"
    )]
    pub limits: Option<Vec<(String, Limit)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_limit_burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_limit_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_limit_cooldown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takeover_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_access: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchdog_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_store: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_directory: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_directory: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_directory: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_directory: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory_mode: Option<String>,
    /// `[[service.NAME.socket]]`, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub socket: Vec<SocketTable>,
}

/// One `[[service.NAME.socket]]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct SocketTable {
    /// A unix socket's path; or `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `ADDR:PORT`; or `path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A value of `limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A number.
    Value(u64),
    /// No limit: `"infinity"`.
    Infinity,
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Value(n) => s.serialize_u64(*n),
            Limit::Infinity => s.serialize_str("infinity"),
        }
    }
}

/// Pairs as a table, in their order.
fn pairs<S: Serializer, V: Serialize>(pairs: &[(String, V)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

fn optional_pairs<S: Serializer, V: Serialize>(
    pairs_: &Option<Vec<(String, V)>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    pairs(pairs_.as_deref().unwrap_or_default(), s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    /// A table with every key set to a value the parser takes.
    fn every_key() -> ServiceTable {
        let s = |v: &str| Some(v.to_string());
        ServiceTable {
            exec: Some(vec!["/bin/sleep".into(), "1".into()]),
            autostart: Some(false),
            keep_alive: Some(true),
            lazy: Some(true),
            accept: Some(false),
            max_connections: Some(8),
            log_instances: s("all"),
            executor_pool: Some(2),
            user: s("root"),
            group: s("0"),
            supplementary_groups: Some(vec!["0".into()]),
            working_directory: s("/tmp"),
            environment: Some(vec![("A".into(), "1".into()), ("B C".into(), "\"".into())]),
            inherit_environment: Some(false),
            stdio: s("null"),
            umask: s("0027"),
            memory_max: s("64M"),
            tasks_max: Some(10),
            limits: Some(vec![
                ("nofile".into(), Limit::Value(1024)),
                ("core".into(), Limit::Infinity),
            ]),
            restart_delay: s("1s"),
            start_limit_burst: Some(3),
            start_limit_interval: s("10s"),
            start_limit_cooldown: s("none"),
            stop_signal: s("SIGINT"),
            stop_timeout: s("3s"),
            takeover_env: s("map"),
            ready: s("notify"),
            start_timeout: s("infinity"),
            after: Some(vec!["other".into()]),
            requires: Some(vec!["other".into()]),
            notify_access: s("all"),
            watchdog: s("30s"),
            watchdog_signal: s("SIGABRT"),
            fd_store: Some(4),
            runtime_directory: Some(vec!["a".into()]),
            state_directory: Some(vec!["b".into()]),
            cache_directory: Some(vec!["c".into()]),
            logs_directory: Some(vec!["d".into()]),
            directory_mode: s("0750"),
            socket: vec![SocketTable {
                path: s("/run/every-key.sock"),
                listen: None,
                kind: s("stream"),
                mode: s("0660"),
                owner: s("0"),
                group: s("0"),
                backlog: Some(16),
                name: s("every"),
            }],
        }
    }

    fn text(doc: &Document) -> String {
        toml::to_string(doc).expect("serializes")
    }

    #[test]
    fn every_key_of_the_schema_parses() {
        let mut other = ServiceTable {
            exec: Some(vec!["/bin/true".into()]),
            ..ServiceTable::default()
        };
        other.socket.push(SocketTable {
            listen: Some("127.0.0.1:0".into()),
            kind: Some("datagram".into()),
            ..SocketTable::default()
        });
        let doc = Document {
            service: vec![("every".into(), every_key()), ("other".into(), other)],
        };
        let text = text(&doc);
        let loaded = load_str("schema.toml", &text);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| !d.warning)
            .map(|d| d.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{text}");
        let config = loaded.config.expect("no errors");
        let s = &config.services[0];
        assert_eq!(s.exec, ["/bin/sleep", "1"]);
        assert_eq!(s.environment[1], ("B C".to_string(), "\"".to_string()));
        assert_eq!(s.limits, [(7, 1024), (4, u64::MAX)]);
        assert_eq!(s.directory_mode, 0o750);
        assert_eq!(s.sockets[0].backlog, 16);
        assert_eq!(
            config.services[1].sockets[0].kind,
            crate::config::SocketKind::Datagram
        );
    }

    /// The keys serde writes for a table with every key set, and those of its sockets (one
    /// with `path`, one with `listen`: a socket has one of the two).
    fn written_keys() -> (Vec<String>, Vec<String>) {
        let mut table = every_key();
        table.socket.push(SocketTable {
            listen: Some("127.0.0.1:0".into()),
            ..SocketTable::default()
        });
        let value = toml::Table::try_from(table).expect("a table");
        let service = value.keys().filter(|k| *k != "socket").cloned().collect();
        let mut socket: Vec<String> = Vec::new();
        let toml::Value::Array(sockets) = &value["socket"] else {
            panic!("socket is not an array");
        };
        for s in sockets {
            let toml::Value::Table(t) = s else {
                panic!("a socket is not a table");
            };
            socket.extend(
                t.keys()
                    .filter(|k| !socket.contains(k))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        (service, socket)
    }

    #[test]
    fn the_schema_has_exactly_the_keys_the_parser_documents() {
        let documented = crate::config::man::documented_keys();
        let (service, socket) = written_keys();
        let mut want_service: Vec<String> = documented["[service.NAME]"].clone();
        want_service.retain(|k| k != "socket");
        let mut want_socket = documented["[[service.NAME.socket]]"].clone();
        let mut service_sorted = service.clone();
        service_sorted.sort();
        want_service.sort();
        assert_eq!(service_sorted, want_service, "[service.NAME] keys");
        let mut socket_sorted = socket.clone();
        socket_sorted.sort();
        want_socket.sort();
        assert_eq!(socket_sorted, want_socket, "socket keys");
    }
}
