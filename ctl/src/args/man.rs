//! stewardctl(1) and the shell completions follow [`COMMANDS`] and [`GLOBAL_OPTIONS`]: their
//! command and option lists are generated from the table, between marker lines, and this test
//! fails when a file differs from what the table says.
//! `STEWARD_WRITE_MAN=1 cargo test -p stewardctl man_page` rewrites them.

use std::path::PathBuf;

use super::{COMMANDS, GLOBAL_OPTIONS, Spec};

/// What the completions call the marked blocks.
const GENERATED: &str =
    "BEGIN GENERATED from ctl/src/args.rs by STEWARD_WRITE_MAN=1 cargo test -p stewardctl man_page";

/// One flag of an option row like `("-n, --lines N", "only the last N lines")`.
#[derive(Debug, PartialEq)]
struct Flag {
    short: Option<char>,
    long: Option<&'static str>,
    /// The value it takes (`N`, `PATH`), if any.
    value: Option<&'static str>,
    what: &'static str,
}

fn flags(options: &[(&'static str, &'static str)]) -> Vec<Flag> {
    options
        .iter()
        .map(|&(spelling, what)| {
            let mut flag = Flag {
                short: None,
                long: None,
                value: None,
                what,
            };
            for part in spelling.split(", ") {
                let mut words = part.split_whitespace();
                let name = words.next().unwrap_or_default();
                if let Some(long) = name.strip_prefix("--") {
                    flag.long = Some(long);
                } else if let Some(short) = name.strip_prefix('-') {
                    flag.short = short.chars().next();
                }
                flag.value = words.next().or(flag.value);
            }
            flag
        })
        .collect()
}

impl Flag {
    /// `-n --lines`.
    fn spellings(&self) -> Vec<String> {
        let short = self.short.map(|c| format!("-{c}"));
        let long = self.long.map(|l| format!("--{l}"));
        short.into_iter().chain(long).collect()
    }
}

/// Whether the command's arguments are service names: none, one or many.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Names {
    None,
    One,
    Many,
}

fn names(spec: &Spec) -> Names {
    if spec.args.contains("NAME...") {
        Names::Many
    } else if spec.args.contains("NAME") {
        Names::One
    } else {
        Names::None
    }
}

/// Every command word, `help` included.
fn command_words() -> Vec<&'static str> {
    COMMANDS.iter().map(|s| s.name).chain(["help"]).collect()
}

/// `text` with what scdoc reads as markup escaped: `*`, `\`, and a `_` not inside a word.
fn scdoc(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let in_word = |j: Option<usize>| {
        j.and_then(|j| chars.get(j))
            .is_some_and(|c| c.is_alphanumeric())
    };
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
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

/// The option rows of `flags` as a scdoc term list, indented by `depth` tabs.
fn scdoc_options(flags: &[Flag], depth: usize) -> String {
    let tabs = "\t".repeat(depth);
    let mut out = String::new();
    for flag in flags {
        let spellings: Vec<String> = flag
            .spellings()
            .iter()
            .map(|s| format!("*{}*", scdoc(s)))
            .collect();
        let value = flag.value.map_or(String::new(), |v| format!(" _{v}_"));
        out.push_str(&format!(
            "{tabs}{}{value}\n{tabs}\t{}\n\n",
            spellings.join(", "),
            scdoc(flag.what)
        ));
    }
    out
}

/// stewardctl(1)'s OPTIONS and COMMANDS sections.
fn man_section() -> String {
    let mut out = String::from("# OPTIONS\n\n");
    out.push_str(&scdoc_options(&flags(GLOBAL_OPTIONS), 0));
    out.push_str("# COMMANDS\n\n");
    for spec in COMMANDS {
        let args = if spec.args.is_empty() {
            String::new()
        } else {
            format!(" {}", scdoc(spec.args))
        };
        out.push_str(&format!("*{}*{args}\n", spec.name));
        let lines: Vec<String> = spec
            .details
            .lines()
            .map(|line| format!("\t{}", scdoc(line.trim())))
            .collect();
        // A paragraph per line of the help.
        out.push_str(&lines.join("\n\n"));
        out.push_str("\n\n");
        out.push_str(&scdoc_options(&flags(spec.options), 1));
    }
    out
}

/// bash: the word lists, and per command its options and whether it takes service names.
fn bash() -> String {
    let global = flags(GLOBAL_OPTIONS);
    let spell = |flags: &[Flag]| -> String {
        flags
            .iter()
            .flat_map(Flag::spellings)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut values: Vec<String> = Vec::new();
    let mut arms = String::new();
    for spec in COMMANDS {
        let options = flags(spec.options);
        values.extend(
            options
                .iter()
                .filter(|f| f.value.is_some())
                .flat_map(Flag::spellings),
        );
        let names = names(spec) != Names::None;
        if !options.is_empty() || names {
            arms.push_str(&format!(
                "        {}) options=\"{}\" names={} ;;\n",
                spec.name,
                spell(&options),
                u8::from(names)
            ));
        }
    }
    values.sort();
    values.dedup();
    format!(
        "    commands=\"{}\"\n    global_options=\"{}\"\n    value_options=\"{}\"\n    \
         case $command in\n{arms}    esac\n",
        command_words().join(" "),
        spell(&global),
        values.join(" ")
    )
}

/// zsh: single-quoted, as `'...'\''...'`.
fn zsh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// zsh's `_arguments` specs of `flags`.
fn zsh_specs(flags: &[Flag]) -> Vec<String> {
    let mut specs = Vec::new();
    for flag in flags {
        let spellings = flag.spellings();
        let exclusive = if spellings.len() > 1 {
            format!("({})", spellings.join(" "))
        } else {
            String::new()
        };
        let what = flag.what.replace('[', "\\[").replace(']', "\\]");
        for spelling in &spellings {
            let (suffix, action) = match flag.value {
                None => ("", String::new()),
                // The value may be glued on (`-n5`, `--lines=5`) or be the next word.
                Some(value) => {
                    let glue = if spelling.starts_with("--") { "=" } else { "+" };
                    let action = if value == "PATH" { "_files" } else { " " };
                    (glue, format!(":{}:{action}", value.to_lowercase()))
                }
            };
            specs.push(zsh_quote(&format!(
                "{exclusive}{spelling}{suffix}[{what}]{action}"
            )));
        }
    }
    specs
}

/// zsh: the commands with their summaries and the global options (`local -a` lines), and the
/// `case` arms per command.
fn zsh() -> (String, String) {
    let mut commands: Vec<String> = COMMANDS
        .iter()
        .map(|s| zsh_quote(&format!("{}:{}", s.name, s.summary)))
        .collect();
    commands.push(zsh_quote(
        "help:show the list of commands, or a command's help",
    ));
    let lists = format!(
        "  commands=(\n    {}\n  )\n  global_options=(\n    {}\n  )\n",
        commands.join("\n    "),
        zsh_specs(&flags(GLOBAL_OPTIONS)).join("\n    ")
    );
    let mut arms = String::new();
    for spec in COMMANDS {
        let mut specs = vec!["$global_options".to_string()];
        specs.extend(zsh_specs(&flags(spec.options)));
        match names(spec) {
            Names::None => {}
            Names::One => specs.push(zsh_quote("1:service:_stewardctl_services")),
            Names::Many => specs.push(zsh_quote("*:service:_stewardctl_services")),
        }
        arms.push_str(&format!(
            "        ({})\n          _arguments {} && ret=0\n          ;;\n",
            spec.name,
            specs.join(" ")
        ));
    }
    (lists, arms)
}

/// fish: single-quoted.
fn fish_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn fish_option(condition: &str, flag: &Flag) -> String {
    let mut line = format!("complete -c stewardctl{condition}");
    if let Some(short) = flag.short {
        line.push_str(&format!(" -s {short}"));
    }
    if let Some(long) = flag.long {
        line.push_str(&format!(" -l {long}"));
    }
    match flag.value {
        Some("PATH") => line.push_str(" -r -F"),
        Some(_) => line.push_str(" -x"),
        None => {}
    }
    line.push_str(&format!(" -d {}\n", fish_quote(flag.what)));
    line
}

/// fish: a `complete` line per option and per command.
fn fish() -> String {
    let mut out = format!("set -l commands {}\n", command_words().join(" "));
    for flag in flags(GLOBAL_OPTIONS) {
        out.push_str(&fish_option("", &flag));
    }
    // In double quotes: $commands is expanded as the line is read.
    let fresh = " -n \"not __fish_seen_subcommand_from $commands\"";
    for spec in COMMANDS {
        out.push_str(&format!(
            "complete -c stewardctl{fresh} -a {} -d {}\n",
            spec.name,
            fish_quote(spec.summary)
        ));
    }
    out.push_str(&format!(
        "complete -c stewardctl{fresh} -a help -d {}\n",
        fish_quote("show the list of commands, or a command's help")
    ));
    out.push_str("complete -c stewardctl -n '__fish_seen_subcommand_from help' -a \"$commands\"\n");
    for spec in COMMANDS {
        let condition = format!(" -n '__fish_seen_subcommand_from {}'", spec.name);
        for flag in flags(spec.options) {
            out.push_str(&fish_option(&condition, &flag));
        }
        if names(spec) != Names::None {
            out.push_str(&format!(
                "complete -c stewardctl{condition} -a '(__stewardctl_services)'\n"
            ));
        }
    }
    out
}

/// `text` with the lines between the `n`-th `begin` marker line and the next `end` line
/// replaced by `body`.
fn replace_block(text: &str, begin: &str, end: &str, n: usize, body: &str) -> String {
    let mut out = String::new();
    let mut seen = 0;
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        if skipping {
            if line.trim() == end {
                skipping = false;
                out.push_str(line);
            }
            continue;
        }
        out.push_str(line);
        if line.trim() == begin {
            if seen == n {
                out.push_str(body);
                skipping = true;
            }
            seen += 1;
        }
    }
    assert!(!skipping, "no {end:?} after {begin:?}");
    assert!(seen > n, "fewer than {} {begin:?} lines", n + 1);
    out
}

/// Each file (relative to the workspace) with what it should say.
fn expected() -> Vec<(&'static str, &'static str, String)> {
    let bash_begin = format!("# {GENERATED}");
    let (zsh_lists, zsh_arms) = zsh();
    let zsh_text = include_str!("../../../packaging/completions/_stewardctl");
    let zsh_text = replace_block(zsh_text, &bash_begin, "# END GENERATED", 0, &zsh_lists);
    let zsh_text = replace_block(&zsh_text, &bash_begin, "# END GENERATED", 1, &zsh_arms);
    let page = include_str!("../../../docs/man/stewardctl.1.scd");
    let man_begin = page
        .lines()
        .find(|l| l.starts_with("; COMMANDS: generated"))
        .expect("stewardctl.1.scd has lost its '; COMMANDS: generated' line");
    let man_begin = page
        .lines()
        .skip_while(|l| *l != man_begin)
        .nth(1)
        .expect("the marker's second line");
    vec![
        (
            "docs/man/stewardctl.1.scd",
            page,
            replace_block(page, man_begin, "; END OF COMMANDS", 0, &man_section()),
        ),
        (
            "packaging/completions/stewardctl.bash",
            include_str!("../../../packaging/completions/stewardctl.bash"),
            replace_block(
                include_str!("../../../packaging/completions/stewardctl.bash"),
                &bash_begin,
                "# END GENERATED",
                0,
                &bash(),
            ),
        ),
        (
            "packaging/completions/_stewardctl",
            include_str!("../../../packaging/completions/_stewardctl"),
            zsh_text,
        ),
        (
            "packaging/completions/stewardctl.fish",
            include_str!("../../../packaging/completions/stewardctl.fish"),
            replace_block(
                include_str!("../../../packaging/completions/stewardctl.fish"),
                &bash_begin,
                "# END GENERATED",
                0,
                &fish(),
            ),
        ),
    ]
}

#[test]
fn man_page_and_completions_follow_the_commands_table() {
    let write = std::env::var_os("STEWARD_WRITE_MAN").is_some();
    let mut stale = Vec::new();
    for (path, have, want) in expected() {
        if want == have {
            continue;
        }
        if write {
            let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(path);
            std::fs::write(full, want).unwrap();
        } else {
            let first = want
                .lines()
                .zip(have.lines())
                .find(|(w, h)| w != h)
                .map_or_else(String::new, |(w, h)| {
                    format!("\n    has:    {h}\n    should: {w}")
                });
            stale.push(format!("  {path}{first}"));
        }
    }
    assert!(
        stale.is_empty(),
        "not what ctl/src/args.rs's COMMANDS table says:\n{}\nrewrite them with\n  \
         STEWARD_WRITE_MAN=1 cargo test -p stewardctl man_page",
        stale.join("\n")
    );
}

#[test]
fn man_page_flags_are_read_from_the_option_rows() {
    let rows = [
        ("-n, --lines N", "last"),
        ("--control PATH", "socket"),
        ("--json", "json"),
    ];
    let parsed = flags(&rows);
    assert_eq!(
        parsed[0],
        Flag {
            short: Some('n'),
            long: Some("lines"),
            value: Some("N"),
            what: "last"
        }
    );
    assert_eq!(parsed[1].spellings(), ["--control"]);
    assert_eq!(parsed[1].value, Some("PATH"));
    assert_eq!(parsed[2].value, None);
    assert_eq!(
        zsh_specs(&parsed[..1]),
        [
            "'(-n --lines)-n+[last]:n: '",
            "'(-n --lines)--lines=[last]:n: '"
        ]
    );
    assert_eq!(scdoc("a_b _x_ *"), "a_b \\_x\\_ \\*");
    assert_eq!(fish_quote("it's a\\b"), "'it\\'s a\\\\b'");
}
