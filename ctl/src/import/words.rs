//! Splitting a value into words by systemd's quoting rules (systemd.syntax(7), "Quoting"), as
//! its `extract_first_word` does: blanks separate words, single and double quotes group (and may
//! open anywhere in a word: `--opt="a b"` is one word), and C escapes are decoded.

use std::fmt;

/// What separates words.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// How backslashes are read, and whether unbalanced quotes are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// `Environment=`: C escapes, and an unknown one or an unbalanced quote is an error.
    Strict,
    /// `Exec*=`: C escapes, but an unknown one is kept as written (systemd warns and retries
    /// this way); an unbalanced quote is an error.
    KeepUnknownEscapes,
    /// Splitting a variable's value for `$VAR` on a command line: a backslash makes the next
    /// character literal, and an unbalanced quote ends the word.
    Relaxed,
}

/// One word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word, quotes removed and escapes decoded.
    pub text: String,
    /// Whether an unknown escape was kept as written (systemd logs a warning for it).
    pub kept_escape: bool,
}

/// Why a value does not split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WordError {
    /// A quote that is not closed, or a backslash at the end inside quotes.
    UnbalancedQuotes,
    /// An escape that is not in systemd's table (under [`Rules::Strict`]), or a trailing
    /// backslash; `offset` is the backslash's byte offset in the value.
    BadEscape {
        /// Where the backslash is.
        offset: usize,
    },
    /// `\xNN` or `\NNN` escapes that spell bytes which are not UTF-8.
    NotUtf8,
}

impl fmt::Display for WordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WordError::UnbalancedQuotes => write!(f, "unbalanced quoting"),
            WordError::BadEscape { offset } => {
                write!(f, "an unknown escape sequence at byte {offset}")
            }
            WordError::NotUtf8 => write!(f, "escapes that do not spell UTF-8 text"),
        }
    }
}

impl std::error::Error for WordError {}

/// A position in a value, from which words are taken one by one; the command-line reader also
/// looks at the raw text between words (for `;` and `\;`).
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `text`.
    pub fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, pos: 0 }
    }

    /// What is left, starting at a word (the cursor never rests on a blank after a word).
    pub fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    /// Skips `n` bytes and the blanks after them.
    pub fn skip(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.text.len());
        self.skip_blanks();
    }

    fn skip_blanks(&mut self) {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && is_blank(bytes[self.pos]) {
            self.pos += 1;
        }
    }

    /// The next word, or `None` at the end.
    pub fn next_word(&mut self, rules: Rules) -> Result<Option<Word>, WordError> {
        self.skip_blanks();
        let bytes = self.text.as_bytes();
        if self.pos == bytes.len() {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut quote: Option<u8> = None;
        let mut kept_escape = false;
        while self.pos < bytes.len() {
            let b = bytes[self.pos];
            match quote {
                Some(q) if b == q => {
                    quote = None;
                    self.pos += 1;
                    continue;
                }
                None if b == b'"' || b == b'\'' => {
                    quote = Some(b);
                    self.pos += 1;
                    continue;
                }
                None if is_blank(b) => {
                    self.skip_blanks();
                    return finish(out, kept_escape);
                }
                _ if b != b'\\' => {
                    out.push(b);
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            // A backslash.
            let at = self.pos;
            self.pos += 1;
            let Some(&next) = bytes.get(self.pos) else {
                return match (rules, quote) {
                    (Rules::Relaxed, _) => finish(out, kept_escape),
                    (Rules::KeepUnknownEscapes, None) => {
                        out.push(b'\\');
                        finish(out, true)
                    }
                    (_, Some(_)) => Err(WordError::UnbalancedQuotes),
                    (Rules::Strict, None) => Err(WordError::BadEscape { offset: at }),
                };
            };
            if rules == Rules::Relaxed {
                out.push(next);
                self.pos += 1;
                continue;
            }
            match unescape_one(&bytes[self.pos..], &mut out) {
                Some(used) => self.pos += used,
                None if rules == Rules::KeepUnknownEscapes => {
                    out.extend_from_slice(&[b'\\', next]);
                    kept_escape = true;
                    self.pos += 1;
                }
                None => return Err(WordError::BadEscape { offset: at }),
            }
        }
        if quote.is_some() && rules != Rules::Relaxed {
            return Err(WordError::UnbalancedQuotes);
        }
        finish(out, kept_escape)
    }
}

fn finish(bytes: Vec<u8>, kept_escape: bool) -> Result<Option<Word>, WordError> {
    let text = String::from_utf8(bytes).map_err(|_| WordError::NotUtf8)?;
    Ok(Some(Word { text, kept_escape }))
}

/// Every word of `text`.
pub fn split(text: &str, rules: Rules) -> Result<Vec<Word>, WordError> {
    let mut cursor = Cursor::new(text);
    let mut words = Vec::new();
    while let Some(word) = cursor.next_word(rules)? {
        words.push(word);
    }
    Ok(words)
}

/// Decodes one C escape (`after` starts just after the backslash) onto `out`, as systemd's
/// `cunescape_one`: the bytes used, or `None` for an escape not in its table. `\xNN` and `\NNN`
/// are bytes; `\uNNNN` and `\UNNNNNNNN` are characters; none may be NUL.
fn unescape_one(after: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let digits = |count: usize, radix: u32| -> Option<u32> {
        let digits = after.get(1..=count)?;
        digits.iter().try_fold(0u32, |acc, &d| {
            Some(acc * radix + (d as char).to_digit(radix)?)
        })
    };
    let simple = match after[0] {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b's' => Some(b' '),
        b @ (b'\\' | b'"' | b'\'') => Some(b),
        _ => None,
    };
    if let Some(byte) = simple {
        out.push(byte);
        return Some(1);
    }
    match after[0] {
        b'x' => {
            let value = digits(2, 16).filter(|&v| v != 0)?;
            out.push(value as u8);
            Some(3)
        }
        first @ (b'u' | b'U') => {
            let count = if first == b'u' { 4 } else { 8 };
            let c = digits(count, 16)
                .filter(|&v| v != 0 && !is_noncharacter(v))
                .and_then(char::from_u32)?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            Some(1 + count)
        }
        b'0'..=b'7' => {
            let octal = after.get(..3)?;
            let value = octal
                .iter()
                .try_fold(0u32, |acc, &d| Some(acc * 8 + (d as char).to_digit(8)?))?;
            if value == 0 || value > 255 {
                return None;
            }
            out.push(value as u8);
            Some(3)
        }
        _ => None,
    }
}

/// Unicode noncharacters, which systemd's `unichar_is_valid` refuses as well as surrogates.
fn is_noncharacter(c: u32) -> bool {
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, rules: Rules) -> Vec<String> {
        split(text, rules)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn blanks_and_quotes() {
        assert_eq!(words("  a \t b  ", Rules::Strict), ["a", "b"]);
        assert_eq!(
            words(r#""something" "some thing" "...""#, Rules::Strict),
            ["something", "some thing", "..."]
        );
        assert_eq!(
            words(r#"'a "b"' "c 'd'""#, Rules::Strict),
            ["a \"b\"", "c 'd'"]
        );
        // A quote may open mid-word, as in extract_first_word.
        assert_eq!(
            words(r#"--opt="a b" x"y"z"#, Rules::Strict),
            ["--opt=a b", "xyz"]
        );
        assert_eq!(words(r#"a "" b"#, Rules::Strict), ["a", "", "b"]);
        assert_eq!(words("", Rules::Strict), Vec::<String>::new());
        assert_eq!(words("   ", Rules::Strict), Vec::<String>::new());
    }

    #[test]
    fn the_escapes_of_the_syntax_table() {
        assert_eq!(
            words(r#"\a\b\f\n\r\t\v\\\"\'\s"#, Rules::Strict),
            ["\x07\x08\x0c\n\r\t\x0b\\\"' "]
        );
        assert_eq!(words(r"\x41\102\u00e9\U0001F600", Rules::Strict), ["ABé😀"]);
        // Bytes from \x escapes make UTF-8 together.
        assert_eq!(words(r"\xc3\xa9", Rules::Strict), ["é"]);
        // Escapes work inside quotes too.
        assert_eq!(words(r#""a\tb" 'c\x41'"#, Rules::Strict), ["a\tb", "cA"]);
        // getty@.service: '-p -- \\u'.
        assert_eq!(words(r"'-p -- \\u'", Rules::Strict), [r"-p -- \u"]);
    }

    #[test]
    fn bad_escapes_by_the_rules() {
        for bad in [
            r"\q", r"\x4", r"\x00", r"\000", r"\400", r"\u0000", r"\ud800", r"\uFFFE",
        ] {
            assert!(
                matches!(
                    split(bad, Rules::Strict),
                    Err(WordError::BadEscape { offset: 0 })
                ),
                "{bad}"
            );
            let kept = split(bad, Rules::KeepUnknownEscapes).unwrap();
            assert_eq!(kept[0].text, bad, "{bad}");
            assert!(kept[0].kept_escape);
        }
        assert_eq!(split(r"\xff", Rules::Strict), Err(WordError::NotUtf8));
        assert_eq!(
            split(r"a b\", Rules::Strict),
            Err(WordError::BadEscape { offset: 3 })
        );
        assert_eq!(words(r"a b\", Rules::KeepUnknownEscapes), ["a", r"b\"]);
    }

    #[test]
    fn unbalanced_quotes() {
        for rules in [Rules::Strict, Rules::KeepUnknownEscapes] {
            assert_eq!(split(r#"a "b c"#, rules), Err(WordError::UnbalancedQuotes));
            assert_eq!(split(r#"a 'b\"#, rules), Err(WordError::UnbalancedQuotes));
        }
        assert_eq!(words(r#"a "b c"#, Rules::Relaxed), ["a", "b c"]);
    }

    #[test]
    fn relaxed_backslashes_quote_one_character() {
        assert_eq!(
            words(r"a\ b \n \\ c\", Rules::Relaxed),
            ["a b", "n", "\\", "c"]
        );
    }

    #[test]
    fn the_cursor_rests_on_the_next_word() {
        let mut cursor = Cursor::new("  one   two ; three");
        assert_eq!(
            cursor.next_word(Rules::Strict).unwrap().unwrap().text,
            "one"
        );
        assert_eq!(cursor.rest(), "two ; three");
        cursor.next_word(Rules::Strict).unwrap();
        assert_eq!(cursor.rest(), "; three");
        cursor.skip(1);
        assert_eq!(cursor.rest(), "three");
    }
}
