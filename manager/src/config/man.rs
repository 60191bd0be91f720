//! steward.toml(5)'s list of keys is the config structs' doc comments (this module's parent):
//! each field of a struct documented as a config table (`[manager]`, `[service.NAME]`, …) is
//! written ``/// `key`, default `value`: what it does.`` (or ``required``), and the man page
//! shows exactly that, between the marker lines below. The test fails when the two differ;
//! `STEWARD_WRITE_MAN=1 cargo test -p steward man_page` rewrites the man page's section.

use std::path::PathBuf;

/// The structs, as written.
const SOURCE: &str = include_str!("mod.rs");
/// The man page, as written.
const PAGE: &str = include_str!("../../../docs/man/steward.toml.5.scd");
/// Where the page's generated section begins and ends (scdoc comment lines).
const BEGIN: &str = "; KEYS: generated from the doc comments of manager/src/config/mod.rs by\n\
                     ; STEWARD_WRITE_MAN=1 cargo test -p steward man_page. Edit those, not this.\n";
const END: &str = "; END OF KEYS\n";

/// One config table: its header, and its keys in the order the struct has them.
#[derive(Debug)]
struct Table {
    header: String,
    keys: Vec<Key>,
}

/// One documented field.
#[derive(Debug)]
struct Key {
    /// What precedes `, default` or `, required`: the key or keys, as written.
    term: String,
    /// The default, as written; `None` for a required key.
    default: Option<String>,
    /// What it does; may be empty.
    text: String,
    /// The TOML names the term mentions (`user`, `group`, …).
    names: Vec<String>,
}

/// Byte offset of the first `needle` outside backticks.
fn find_outside_code(text: &str, needle: &str) -> Option<usize> {
    let mut code = false;
    for (i, c) in text.char_indices() {
        if c == '`' {
            code = !code;
        } else if !code && text[i..].starts_with(needle) {
            return Some(i);
        }
    }
    None
}

/// The backticked spans of `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// A field's doc comment as a key, or why it is not one. Docs that do not start with a
/// backtick are the struct's own bookkeeping (a service's name, where it was written).
fn key(doc: &str) -> Option<Result<Key, String>> {
    if !doc.starts_with('`') {
        return None;
    }
    let default = find_outside_code(doc, ", default ");
    let required = find_outside_code(doc, ", required");
    let (at, rest, default) = match (default, required) {
        (Some(d), r) if r.is_none_or(|r| d < r) => {
            let rest = &doc[d + ", default ".len()..];
            match find_outside_code(rest, ": ") {
                Some(colon) => (d, &rest[colon + 1..], Some(rest[..colon].to_string())),
                None => (d, "", Some(rest.trim_end_matches('.').to_string())),
            }
        }
        (_, Some(r)) => {
            let rest = &doc[r + ", required".len()..];
            (r, rest.strip_prefix(':').unwrap_or(rest), None)
        }
        _ => {
            return Some(Err(format!(
                "a config key's doc must read \"`key`, default `value`: what it does\" \
                 (or \"`key`, required: …\"): {doc}"
            )));
        }
    };
    let term = doc[..at].to_string();
    let names = code_spans(&term)
        .into_iter()
        .filter_map(|span| {
            let name = span.trim_start_matches('[').trim_end_matches(']');
            // `[[service.NAME.socket]]` is the key `socket` of its service.
            let name = name.rsplit('.').next().unwrap_or(name);
            let word = name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            (word && !name.is_empty()).then(|| name.to_string())
        })
        .collect();
    Some(Ok(Key {
        term,
        default,
        text: rest.trim().to_string(),
        names,
    }))
}

/// Every struct of `source` whose doc names a table (`` `[manager]` ``), with its keys.
fn tables(source: &str) -> Result<Vec<Table>, Vec<String>> {
    let mut tables = Vec::new();
    let mut errors = Vec::new();
    let mut doc: Vec<&str> = Vec::new();
    let mut current: Option<Table> = None;
    for line in source.lines() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim());
            continue;
        }
        if line.starts_with("#[") {
            continue;
        }
        let text = doc
            .iter()
            .filter(|l| !l.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        doc.clear();
        if let Some(table) = current.as_mut() {
            if line == "}" {
                tables.extend(current.take());
            } else if let Some((field, _)) = line.split_once(':') {
                let field = field.trim_start_matches("pub").trim();
                match key(&text) {
                    Some(Ok(key)) => table.keys.push(key),
                    Some(Err(e)) => errors.push(format!("{}: {field}: {e}", table.header)),
                    None => {}
                }
            }
        } else if line.starts_with("pub struct ") && line.ends_with('{') {
            let header = code_spans(&text)
                .into_iter()
                .find(|span| span.starts_with('[') && span.ends_with(']'));
            current = header.map(|header| Table {
                header: header.to_string(),
                keys: Vec::new(),
            });
        }
    }
    if errors.is_empty() {
        Ok(tables)
    } else {
        Err(errors)
    }
}

/// `text` with what scdoc reads as markup escaped: `*`, `\\`, and a `_` that is not inside a
/// word (scdoc leaves `keep_alive` alone, but `_x_` would be underlined).
fn literal(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let in_word = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_alphanumeric())
        };
        let markup = match c {
            '*' | '\\' => true,
            '_' => !(in_word(i.checked_sub(1)) && in_word(Some(i + 1))),
            _ => false,
        };
        if markup {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// scdoc text: backticked code in bold, everything else literal.
fn scdoc(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        let escaped = literal(part);
        if i % 2 == 1 && !part.is_empty() {
            out.push('*');
            out.push_str(&escaped);
            out.push('*');
        } else {
            out.push_str(&escaped);
        }
    }
    out
}

/// `text` as tab-indented lines of at most about 96 columns, never starting a line with a
/// character scdoc or roff would read as markup.
fn indented(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let safe = !word.starts_with(['.', '\'', '-', '[', '|', ':', '#', ';']);
        if !line.is_empty() && line.len() + word.len() >= 96 && safe {
            out.push('\t');
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push('\t');
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The generated section, markers included.
fn render(tables: &[Table]) -> String {
    let mut out = String::from(BEGIN);
    for table in tables {
        out.push_str(&format!("\n## {}\n", scdoc(&table.header)));
        for key in &table.keys {
            let term = match &key.default {
                Some(default) => format!("{}, default {}", key.term, default),
                None => format!("{}, required", key.term),
            };
            out.push_str(&format!("\n{}\n", scdoc(&term)));
            out.push_str(&indented(&scdoc(&key.text)));
        }
    }
    out.push('\n');
    out.push_str(END);
    out
}

/// The page with its section replaced by `section`.
fn replaced(page: &str, section: &str) -> Result<String, String> {
    let begin = page
        .find(BEGIN)
        .ok_or("the man page has lost its BEGIN marker")?;
    let end = page[begin..]
        .find(END)
        .map(|at| begin + at + END.len())
        .ok_or("the man page has lost its END marker")?;
    Ok(format!("{}{section}{}", &page[..begin], &page[end..]))
}

/// The TOML names each table's struct documents, by the table's header: what the parser
/// knows, for [`super::written`]'s test that its schema has the same keys.
pub(super) fn documented_keys() -> std::collections::HashMap<String, Vec<String>> {
    let tables = tables(SOURCE).unwrap_or_else(|errors| panic!("{}", errors.join("\n")));
    tables
        .into_iter()
        .map(|t| {
            let names = t.keys.into_iter().flat_map(|k| k.names).collect();
            (t.header, names)
        })
        .collect()
}

#[test]
fn man_page_lists_every_config_key_as_the_doc_comments_say() {
    let tables = tables(SOURCE).unwrap_or_else(|errors| panic!("{}", errors.join("\n")));
    // A table whose struct moved to another file would silently leave the page.
    for header in ["[manager]", "[service.NAME]", "[[service.NAME.socket]]"] {
        assert!(
            tables
                .iter()
                .any(|t| t.header == header && !t.keys.is_empty()),
            "no struct documented as the {header} table in manager/src/config/mod.rs"
        );
    }
    let section = render(&tables);
    let expected = replaced(PAGE, &section).unwrap();
    if std::env::var_os("STEWARD_WRITE_MAN").is_some() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/man/steward.toml.5.scd");
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    if expected != PAGE {
        let differs = expected
            .lines()
            .zip(PAGE.lines())
            .find(|(a, b)| a != b)
            .map_or_else(String::new, |(want, have)| {
                format!("\nfirst difference:\n  page: {have}\n  docs: {want}")
            });
        panic!(
            "docs/man/steward.toml.5.scd is not what the doc comments of \
             manager/src/config/mod.rs say; rewrite it with\n  \
             STEWARD_WRITE_MAN=1 cargo test -p steward man_page{differs}"
        );
    }
}

#[test]
fn man_page_key_list_reads_every_kind_of_doc() {
    let source = "\
/// The `[manager]` table.
#[derive(Debug)]
pub struct ManagerSettings {
    /// `log_buffer`, default `\"64K\"`: bytes kept
    /// per service.
    pub log_buffer: u64,
    /// Where it was written.
    pub origin: Origin,
    /// `path` (a unix socket) or `listen` (`ADDR:PORT`), required: where it listens.
    pub address: SocketAddress,
    /// `umask`, default `\"0022\"`.
    pub umask: u32,
    /// `[[service.NAME.socket]]`, default none: the sockets.
    pub sockets: Vec<SocketConfig>,
}

/// Not a table.
pub struct Loaded {
    /// `None` when any error was found.
    pub config: Option<Config>,
}
";
    let tables = tables(source).unwrap();
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].header, "[manager]");
    let keys = &tables[0].keys;
    let summary: Vec<_> = keys
        .iter()
        .map(|k| (k.names.join(" "), k.default.as_deref(), k.text.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "log_buffer".into(),
                Some("`\"64K\"`"),
                "bytes kept per service."
            ),
            ("path listen".into(), None, "where it listens."),
            ("umask".into(), Some("`\"0022\"`"), ""),
            ("socket".into(), Some("none"), "the sockets."),
        ]
    );
    let section = render(&tables);
    assert!(section.contains("\n*log_buffer*, default *\"64K\"*\n\tbytes kept per service.\n"));
    assert_eq!(
        scdoc("`RLIMIT_*` _x_ a\\b"),
        "*RLIMIT\\_\\** \\_x\\_ a\\\\b"
    );
    assert!(section.contains("\n*path* (a unix socket) or *listen* (*ADDR:PORT*), required\n"));

    let broken = "/// The `[manager]` table.\npub struct M {\n    /// `colour`: red.\n    pub colour: u8,\n}\n";
    let errors = self::tables(broken).unwrap_err();
    assert!(
        errors[0].starts_with("[manager]: colour: a config key's doc"),
        "{errors:?}"
    );
}

/// Every key the man page documents is one the parser reads: set to a value no key takes (a
/// date), it is refused as a bad value, not as an unknown key.
#[test]
fn man_page_documents_only_keys_the_parser_knows() {
    let tables = tables(SOURCE).unwrap_or_else(|errors| panic!("{}", errors.join("\n")));
    for table in &tables {
        let header = table.header.replace("NAME", "a");
        for name in table.keys.iter().flat_map(|k| &k.names) {
            let text = format!("{header}\n{name} = 1970-01-01\n");
            let loaded = super::load_str("t.toml", &text);
            let unknown = format!("unknown key `{name}`");
            for d in &loaded.diagnostics {
                assert!(!d.message.contains(&unknown), "{}: {d}", table.header);
            }
            assert!(loaded.config.is_none(), "{text} was accepted");
        }
    }
}

/// The flags of `steward --help` are in steward(8).
#[test]
fn man_page_of_steward_shows_every_flag_of_its_usage() {
    let page = include_str!("../../../docs/man/steward.8.scd");
    for word in crate::USAGE.split_whitespace() {
        let flag = word.trim_start_matches('[').trim_end_matches(']');
        if flag.starts_with("--") {
            assert!(
                page.contains(&format!("*{flag}*")),
                "docs/man/steward.8.scd does not describe {flag}"
            );
        }
    }
}
