//! Rule-file problems as `file:line:col: message`, and byte-span → line:col conversion.

use std::ops::Range;
use std::path::{Path, PathBuf};

pub use crate::diag::Diagnostic;
use crate::diag::LineIndex;

/// Where a file's compile problems go: every check reports at a byte span of its source.
pub(super) struct Ctx<'a> {
    pub(super) src: &'a Source,
    pub(super) diags: &'a mut Vec<Diag>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.diags.push(self.src.diag(span, message));
    }

    /// A size (`"64KiB"`, or a number of bytes); `None` after reporting a bad one.
    pub(super) fn size(&mut self, s: &toml::Spanned<crate::units::de::SizeValue>) -> Option<u64> {
        match s.get_ref().parse() {
            Ok(n) => Some(n),
            Err(e) => {
                self.err(&s.span(), e.to_string());
                None
            }
        }
    }

    /// A duration greater than zero (`"15m"`); `None` after reporting a bad one.
    pub(super) fn positive_duration(&mut self, v: &toml::Spanned<String>, name: &str) -> Option<std::time::Duration> {
        match crate::units::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.err(&v.span(), format!("{name} must be greater than zero"));
                None
            }
            Err(e) => {
                self.err(&v.span(), e.to_string());
                None
            }
        }
    }
}

/// One source file being loaded: path as given, text, line index.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) order: usize,
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    index: LineIndex,
}

impl Source {
    pub(crate) fn new(order: usize, path: PathBuf, text: String) -> Self {
        let index = LineIndex::new(&text);
        Source { order, path, text, index }
    }

    pub(crate) fn pos(&self, span: &Range<usize>) -> (usize, usize) {
        self.index.line_col(&self.text, span.start)
    }

    pub(crate) fn diag(&self, span: &Range<usize>, message: impl Into<String>) -> Diag {
        let (line, col) = self.pos(span);
        Diag {
            order: self.order,
            offset: span.start,
            diagnostic: Diagnostic { file: self.path.clone(), line, col, message: message.into() },
        }
    }

    /// `path:line:col` of a span, for "first defined at …" notes.
    pub(crate) fn location(&self, span: &Range<usize>) -> String {
        let (line, col) = self.pos(span);
        format!("{}:{line}:{col}", self.path.display())
    }

    pub(crate) fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new(""))
    }
}

/// A diagnostic with its sort key (file order, byte offset).
#[derive(Debug)]
pub(crate) struct Diag {
    pub(crate) order: usize,
    pub(crate) offset: usize,
    pub(crate) diagnostic: Diagnostic,
}

/// Sorts by file order then position, keeping insertion order for ties.
pub(crate) fn finish(mut diags: Vec<Diag>) -> Vec<Diagnostic> {
    diags.sort_by_key(|d| (d.order, d.offset));
    diags.into_iter().map(|d| d.diagnostic).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        let src = "a = 1\nbé = \"x\"\n\nlast";
        let idx = LineIndex::new(src);
        assert_eq!(idx.line_col(src, 0), (1, 1));
        assert_eq!(idx.line_col(src, 4), (1, 5));
        assert_eq!(idx.line_col(src, 6), (2, 1));
        // "bé = " is 6 bytes but 5 chars: the quote is column 6.
        let quote = src.find('"').unwrap_or(0);
        assert_eq!(idx.line_col(src, quote), (2, 6));
        assert_eq!(idx.line_col(src, src.len()), (4, 5));
        assert_eq!(idx.line_col(src, 10_000), (4, 5));
        // inside the two-byte 'é' clamps to its start
        assert_eq!(idx.line_col(src, 8), (2, 2));
    }

    #[test]
    fn display_is_file_line_col_message() {
        let d = Diagnostic { file: PathBuf::from("rules/a.toml"), line: 3, col: 7, message: "bad".into() };
        assert_eq!(d.to_string(), "rules/a.toml:3:7: bad");
        assert_eq!(Diagnostic::at_start("rules", "missing").to_string(), "rules:1:1: missing");
    }
}
