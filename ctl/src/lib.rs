//! The library half of stewardctl: what is worth testing, fuzzing or reusing apart from the
//! command line. Today that is [`import`], the reader of systemd units behind
//! `stewardctl import`; the binary (`main.rs`) keeps the control client to itself.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod import;

use std::path::Path;
use std::sync::Arc;

/// For the `unit_file` fuzz target (`fuzz/`): reads `data` as a unit file of each type and
/// every value as each directive reader would, checking what any input must give: entries or
/// an error naming the file and a line inside it, never a panic.
#[doc(hidden)]
pub fn fuzz_unit_file(data: &[u8]) {
    let file: Arc<Path> = Arc::from(Path::new("fuzz.service"));
    let lines = data.split(|&b| b == b'\n' || b == b'\r').count().max(1);
    let name = import::UnitName::parse("fuzz@in\\x2dstance.service").expect("a valid name");
    let specifiers = import::Specifiers::new(&name);
    let mut service_entries = None;
    for kind in [import::UnitKind::Service, import::UnitKind::Socket] {
        match import::syntax::parse(data, &file, kind) {
            Ok(entries) => {
                // The mapping and the printed TOML too: any entries with a command give a
                // config that checks (render's self-check failing is the importer's bug).
                let unit = |name: &str, entries: Vec<import::Entry>| {
                    let name = import::UnitName::parse(name).expect("a valid name");
                    import::Unit {
                        specifiers: import::Specifiers::new(&name),
                        name,
                        aliases: Vec::new(),
                        fragment: file.to_path_buf(),
                        dropins: Vec::new(),
                        entries,
                        wanted_by: Vec::new(),
                    }
                };
                let import = match kind {
                    import::UnitKind::Service => {
                        service_entries = Some(entries.clone());
                        import::Import {
                            requested: "fuzz.service".into(),
                            service: unit("fuzz.service", entries.clone()),
                            sockets: Vec::new(),
                        }
                    }
                    import::UnitKind::Socket => import::Import {
                        requested: "fuzz.socket".into(),
                        service: unit("fuzz.service", service_entries.clone().unwrap_or_default()),
                        sockets: vec![unit("fuzz.socket", entries.clone())],
                    },
                };
                // A root without files: environment files are missing there.
                let root = Path::new("/nonexistent/stewardctl-fuzz");
                if let Ok(mapped) = import::map::map(&[import], root) {
                    // Without `exec` the import stops before printing (a clear error).
                    if mapped.services.iter().all(|s| s.table.exec.is_some()) {
                        if let Err(e) = import::render::render(&mapped) {
                            panic!("a mapped config does not check: {e}");
                        }
                    }
                }
                for entry in &entries {
                    assert!(entry.origin.line >= 1 && entry.origin.line <= lines);
                    assert!(!entry.key.is_empty());
                    if let Ok(commands) = import::exec::parse(&entry.value, &specifiers) {
                        for command in &commands {
                            assert!(!command.argv.is_empty() && !command.path.is_empty());
                            for sub in &command.substitutions {
                                assert!(command.argv[sub.arg].get(sub.range.clone()).is_some());
                            }
                            command.expand(|name| Some(name.repeat(2)));
                        }
                    }
                    let _ = import::environment::parse_assignments(
                        &entry.value,
                        &specifiers,
                        &entry.origin,
                    );
                    let _ = import::environment::parse_environment_file(&entry.value, &specifiers);
                    let _ = import::UnitName::parse(&entry.value);
                }
            }
            Err(e) => {
                let message = e.to_string();
                assert!(message.starts_with("fuzz.service"), "{message}");
            }
        }
    }
    let _ = import::environment::parse_environment_text(data, &file);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = import::name::unescape(text);
        let _ = specifiers.expand(text);
        let _ = import::words::split(text, import::words::Rules::Relaxed);
    }
}
