//! A problem found while loading or checking a rule pack, located for humans and editors.
//!
//! Every load failure — TOML syntax, schema violation, Rhai compile error, missing entry
//! point, failing table row — becomes a [`Problem`] so that `check`, hot reload and
//! `status` print them the same way: `path:line:col: message` (GCC style, so editors
//! jump to it), or `path: /json/pointer: message` for schema violations.
//!
//! A problem is an error (the pack is refused) or a warning (it is reported, the pack
//! is used): the static pass (`rules::lint`) gives each of its findings a code from
//! its table (`RB001`…), an end position and a hint, which `check` renders with source
//! lines and carets. `Display` stays one GCC-style line, the code appended in brackets.
//!
//! Values quoted in any message are clipped ([`clip_display`], [`clip_text`]): a
//! few hundred bytes and the size, never a 50 MB field echoed into a log line.

use serde::Serialize;
use std::fmt;

/// Whether a problem refuses the pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The pack is refused (at startup, at reload, by `check`).
    #[default]
    Error,
    /// Reported; the pack is still used (`check --deny-warnings` fails on it).
    Warning,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Path as the user knows it (the pack folder joined with the file's relative path).
    pub file: String,
    pub line: Option<usize>,
    pub col: Option<usize>,
    /// Where the located text ends (1-based, inclusive line; exclusive column), when known.
    pub end_line: Option<usize>,
    pub end_col: Option<usize>,
    /// JSON pointer into the document, for schema violations.
    pub pointer: Option<String>,
    pub message: String,
    /// The finding's code (`RB001`…, table in `rules::lint::codes`), if it has one.
    pub code: Option<&'static str>,
    pub severity: Severity,
    /// What to do about it, when there is something better to say than the message.
    pub hint: Option<String>,
}

impl Problem {
    pub fn in_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            file: file.into(),
            line: None,
            col: None,
            end_line: None,
            end_col: None,
            pointer: None,
            message: message.into(),
            code: None,
            severity: Severity::Error,
            hint: None,
        }
    }

    pub fn at(
        file: impl Into<String>,
        line: Option<usize>,
        col: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            line,
            col,
            ..Problem::in_file(file, message)
        }
    }

    pub fn at_pointer(
        file: impl Into<String>,
        pointer: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let pointer = pointer.into();
        let pointer = if pointer.is_empty() {
            "/".to_string()
        } else {
            pointer
        };
        Problem {
            pointer: Some(pointer),
            ..Problem::in_file(file, message)
        }
    }

    /// The same problem with a code from the lint table.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    /// Where the located text ends (exclusive column).
    pub fn with_end(mut self, line: usize, col: usize) -> Self {
        self.end_line = Some(line);
        self.end_col = Some(col);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        match (self.line, self.col) {
            (Some(line), Some(col)) => write!(f, ":{line}:{col}")?,
            (Some(line), None) => write!(f, ":{line}")?,
            _ => {}
        }
        if let Some(pointer) = &self.pointer {
            write!(f, ": {pointer}")?;
        }
        if self.severity == Severity::Warning {
            f.write_str(": warning")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(code) = self.code {
            write!(f, " [{code}]")?;
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset in `text` (columns count characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Bytes of message a value may contribute to an error: enough to recognise it.
pub const CLIP_BYTES: usize = 300;

/// Formats `value` with `Display`, stopping after [`CLIP_BYTES`]: a 50 MB value in an
/// error must cost 300 bytes, not 50 MB formatted and then cut.
pub fn clip_display(value: &impl std::fmt::Display) -> String {
    clip_formatted(|w| std::fmt::Write::write_fmt(w, format_args!("{value}")))
}

/// The same with `Debug`.
pub fn clip_debug(value: &impl std::fmt::Debug) -> String {
    clip_formatted(|w| std::fmt::Write::write_fmt(w, format_args!("{value:?}")))
}

fn clip_formatted(write: impl FnOnce(&mut Clipped) -> std::fmt::Result) -> String {
    let mut out = Clipped {
        text: String::new(),
        total: 0,
    };
    // The writer keeps counting past the clip (to state the size) but stops the
    // formatting at `COUNT_BYTES`; that error is ours, not a failure.
    let stopped = write(&mut out).is_err();
    if out.total <= CLIP_BYTES {
        return out.text;
    }
    let size = if stopped {
        format!("more than {COUNT_BYTES} bytes")
    } else {
        format!("{} bytes", out.total)
    };
    format!("{}… ({size})", out.text)
}

/// Formatting stops here; a clipped message then says "more than" this.
const COUNT_BYTES: usize = 1 << 20;

/// Clips an already formatted message (from a library that gives only a `String`).
pub fn clip_text(text: &str) -> String {
    if text.len() <= CLIP_BYTES {
        return text.to_string();
    }
    let mut end = CLIP_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

struct Clipped {
    text: String,
    total: usize,
}

impl std::fmt::Write for Clipped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = CLIP_BYTES.saturating_sub(self.text.len());
        self.total += s.len();
        let mut end = room.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        if self.total > COUNT_BYTES {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_locations_gcc_style() {
        assert_eq!(
            Problem::at("rules/a.rhai", Some(3), Some(7), "boom").to_string(),
            "rules/a.rhai:3:7: boom"
        );
        assert_eq!(
            Problem::at_pointer("rules/pack.toml", "/filter/0/params", "bad").to_string(),
            "rules/pack.toml: /filter/0/params: bad"
        );
        assert_eq!(
            Problem::at_pointer("x.json", "", "bad").to_string(),
            "x.json: /: bad"
        );
        assert_eq!(
            Problem::at("r.rhai", Some(2), Some(5), "unused")
                .with_code("RB101")
                .with_severity(Severity::Warning)
                .to_string(),
            "r.rhai:2:5: warning: unused [RB101]"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé f", 9), (2, 6));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
