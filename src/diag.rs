//! `file:line:col: message` diagnostics shared by the config and rule-file loaders.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a byte span of `src` (1-based line and column, columns counted in chars).
    pub fn at(file: &Path, src: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, col) = span.map_or((1, 1), |s| line_col(src, s.start));
        Diagnostic { file: file.to_path_buf(), line, col, message: message.into() }
    }

    /// A diagnostic about a file as a whole (unreadable, missing).
    pub fn at_start(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic { file: file.into(), line: 1, col: 1, message: message.into() }
    }
}

impl std::error::Error for Diagnostic {}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)
    }
}

/// How many unknown keys / wrong types one file may have reported before we stop looking.
const MAX_DATA_ERRORS: usize = 32;

/// Deserializes a TOML file. serde stops at the first unknown key or wrong type; to report them
/// all, the offending `key = value` line is blanked out (offsets kept) and the file parsed
/// again. Only a key that starts its own line is skipped this way — blanking a table header or
/// part of an inline table would only produce misleading follow-on errors — and a syntax error
/// ends the file. Returns what deserialized after skipping (for further checks) and every error.
pub fn from_toml_recovering<T: serde::de::DeserializeOwned>(src: &str) -> (Option<T>, Vec<(Range<usize>, String)>) {
    let mut errors = Vec::new();
    let mut text = std::borrow::Cow::Borrowed(src);
    let mut blanked_key: Option<String> = None;
    for _ in 0..MAX_DATA_ERRORS {
        let err = match toml::from_str::<T>(&text) {
            Ok(raw) => return (Some(raw), errors),
            Err(e) => e,
        };
        if blanked_key.as_ref().is_some_and(|k| err.message().starts_with(&format!("missing field `{k}`"))) {
            // Only the consequence of skipping a required key whose value was wrong.
            return (None, errors);
        }
        let span = err.span().unwrap_or(0..0);
        errors.push((span.clone(), err.message().trim().to_owned()));
        let syntax_ok = text.parse::<toml::Table>().is_ok();
        let line_start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[span.end.min(text.len())..].find('\n').map_or(text.len(), |i| span.end + i);
        let prefix = text[line_start..span.start.min(text.len())].trim();
        // The span is the line's key, or the whole value right after `key =`.
        let at_key = prefix.is_empty() && !text[span.start.min(text.len())..].starts_with('[');
        let at_value = prefix.ends_with('=') && !prefix.starts_with('[') && !prefix.contains(['{', ',']);
        let skippable = (at_key || at_value) && !err.message().starts_with("missing field");
        if !syntax_ok || !skippable || line_end <= line_start {
            break;
        }
        blanked_key = text[line_start..line_end].split('=').next().map(|k| k.trim().trim_matches('"').to_owned());
        let mut blanked = text.into_owned();
        blanked.replace_range(line_start..line_end, &" ".repeat(line_end - line_start));
        if blanked.parse::<toml::Table>().is_err() {
            // The value spanned several lines; what is left would not even parse.
            return (None, errors);
        }
        text = std::borrow::Cow::Owned(blanked);
    }
    (None, errors)
}

/// Maps byte offsets of one source text to 1-based line and column.
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// 1-based (line, col) of byte `offset`; `col` counts characters. Offsets past the end or
    /// inside a multi-byte character are clamped.
    pub fn line_col(&self, src: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let col = src.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
        (line, col)
    }
}

/// 1-based (line, col) of byte `offset` in `src`, for a single lookup.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(src).line_col(src, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 11), (2, 6));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn display_is_file_line_col() {
        let d = Diagnostic::at(Path::new("x/p.toml"), "a\nbc", Some(3..4), "boom");
        assert_eq!(d.to_string(), "x/p.toml:2:2: boom");
    }
}
