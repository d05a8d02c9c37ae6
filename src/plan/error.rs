//! Plan errors that name the file, line and column, and finding the line of a key for the
//! checks that can only run once the whole plan is parsed.

use std::fmt;
use std::path::{Path, PathBuf};

/// A plan refused before any work: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The plan file.
    pub file: PathBuf,
    /// 1-based line (0 when the error is about the file as a whole).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl PlanError {
    /// An error at a position of `file`.
    pub fn at(file: &Path, line: usize, col: usize, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), line, col, message: message.into() }
    }

    /// An error at the first occurrence of `key:` in the source, or at 1:1 if the plan does
    /// not write the key (the error is then about its default).
    pub fn at_key(file: &Path, source: &str, key: &str, message: impl Into<String>) -> Self {
        let (line, col) = locate_key(source, key).unwrap_or((1, 1));
        Self::at(file, line, col, message)
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)
        }
    }
}

impl std::error::Error for PlanError {}

/// The 1-based (line, column) of the first `key` written as a field name (`key:`) outside
/// comments and strings.
pub fn locate_key(source: &str, key: &str) -> Option<(usize, usize)> {
    let mut in_block = false;
    for (ln, line) in source.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut in_str = false;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if in_block {
                if c == '*' && next == Some('/') {
                    in_block = false;
                    i += 1;
                }
            } else if in_str {
                if c == '\\' {
                    i += 1;
                } else if c == '"' {
                    in_str = false;
                }
            } else if c == '"' {
                in_str = true;
            } else if c == '/' && next == Some('/') {
                break;
            } else if c == '/' && next == Some('*') {
                in_block = true;
                i += 1;
            } else if is_ident(c) && (i == 0 || !is_ident(chars[i - 1])) {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if word == key && chars.get(j) == Some(&':') {
                    return Some((ln + 1, start + 1));
                }
                continue;
            }
            i += 1;
        }
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_outside_comments_and_strings() {
        let src = "// data: here\n(\n  name: \"data: x\",\n  /* data: */ data: (dir: \"d\"),\n)";
        assert_eq!(locate_key(src, "data"), Some((4, 15)));
        assert_eq!(locate_key(src, "dir"), Some((4, 22)));
        assert_eq!(locate_key(src, "nothing"), None);
    }
}
