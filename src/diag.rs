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

    /// Turns a TOML parse/deserialize error into a diagnostic; the message is toml's first line
    /// only (its multi-line rendering repeats the source).
    pub fn from_toml(file: &Path, src: &str, err: &toml::de::Error) -> Self {
        Diagnostic::at(file, src, err.span(), err.message().trim().to_string())
    }
}

impl std::error::Error for Diagnostic {}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)
    }
}

pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
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
