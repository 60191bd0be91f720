//! The mapped services as one TOML document: serde and the `toml` crate write every header and
//! value (from [`steward::written`]'s structs); this module only orders the lines and puts
//! the comments where the directives stood. What it prints is read back before it is
//! returned: by the `toml` parser, which must find exactly the tables that were serialized,
//! and by steward's own config parser, which must find no error.

use std::path::PathBuf;

use steward::written::{Document, ServiceTable};

use super::map::{Layout, Line, Mapped};

/// Why a mapped config could not be printed: a bug of the importer, said plainly.
#[derive(Debug)]
pub struct RenderError(pub String);

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the config made does not check: {}", self.0)
    }
}

impl std::error::Error for RenderError {}

/// A comment's text on one line, without what a TOML comment may not hold.
fn comment(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    format!("# {}\n", clean.trim_end())
}

fn serialize<T: serde::Serialize>(value: &T) -> Result<String, RenderError> {
    toml::to_string(value).map_err(|e| RenderError(e.to_string()))
}

/// `[service.NAME]` or `[[service.NAME.socket]]`, as the serializer writes it.
fn header(name: &str, socket: bool) -> Result<String, RenderError> {
    let body = match socket {
        true => {
            let mut body = toml::Table::new();
            body.insert(
                "socket".into(),
                toml::Value::Array(vec![toml::Value::Table(toml::Table::new())]),
            );
            body
        }
        false => toml::Table::new(),
    };
    let mut services = toml::Table::new();
    services.insert(name.to_string(), toml::Value::Table(body));
    let mut doc = toml::Table::new();
    doc.insert("service".into(), toml::Value::Table(services));
    serialize(&doc)
}

/// The keys of `table` in `layout`'s order, each after the comments placed before it; a key
/// the layout does not place goes last.
fn lines(out: &mut String, table: &toml::Table, layout: &Layout) {
    let mut placed: Vec<_> = layout.lines.iter().collect();
    placed.sort_by_key(|(at, _)| *at);
    let mut written: Vec<&str> = Vec::new();
    let key_line = |out: &mut String, key: &str, written: &mut Vec<&str>| {
        if let Some(value) = table.get(key).filter(|_| !written.contains(&key)) {
            // Keys are the schema's field names, bare words; values are the serializer's.
            out.push_str(&format!("{key} = {value}\n"));
        }
    };
    for (_, line) in placed {
        match line {
            Line::Comment(text) => out.push_str(&comment(text)),
            Line::Key(key) => {
                key_line(out, key, &mut written);
                written.push(key);
            }
        }
    }
    for key in table.keys() {
        if key != "socket" && !written.contains(&key.as_str()) {
            if let Some(value) = table.get(key) {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
    }
}

/// The document for `mapped`, checked.
pub fn render(mapped: &Mapped) -> Result<String, RenderError> {
    let mut out = String::new();
    for (i, s) in mapped.services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for line in &s.header {
            out.push_str(&comment(line));
        }
        out.push_str(&header(&s.name, false)?);
        let value = toml::Table::try_from(&s.table).map_err(|e| RenderError(e.to_string()))?;
        lines(&mut out, &value, &s.layout);
        if let Some(toml::Value::Array(sockets)) = value.get("socket") {
            for (n, socket) in sockets.iter().enumerate() {
                let toml::Value::Table(socket) = socket else {
                    return Err(RenderError("a socket is not a table".into()));
                };
                out.push('\n');
                out.push_str(&header(&s.name, true)?);
                let empty = Layout::default();
                lines(&mut out, socket, s.socket_layouts.get(n).unwrap_or(&empty));
            }
        }
    }
    check(mapped, &out)?;
    Ok(out)
}

/// Reads `text` back: the same tables as serialized, and no error from steward's parser.
fn check(mapped: &Mapped, text: &str) -> Result<(), RenderError> {
    let document = Document {
        service: mapped
            .services
            .iter()
            .map(|s| (s.name.clone(), s.table.clone()))
            .collect::<Vec<(String, ServiceTable)>>(),
    };
    let expected = toml::Table::try_from(&document).map_err(|e| RenderError(e.to_string()))?;
    let read: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| RenderError(e.to_string()))?;
    if read != expected {
        return Err(RenderError(
            "the text does not read back as the tables it was made of".into(),
        ));
    }
    let errors: Vec<String> = steward::check_config_text(vec![(
        PathBuf::from("stewardctl-import.toml"),
        text.to_string(),
    )])
    .into_iter()
    .filter(|d| !d.warning)
    .map(|d| d.to_string())
    .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(RenderError(errors.join("; "))),
    }
}
