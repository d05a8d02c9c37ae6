//! Small helpers shared by several modules: atomic file writes.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Writes `path` by letting `write` fill a temporary file beside it, flushing it to the disk
/// and renaming it into place, so neither a killed process nor (as far as the filesystem keeps
/// its promises) a crashed machine leaves a half-written file under the final name. Errors
/// name the file.
pub fn atomic_write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    let file_name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = write(&tmp)
        .with_context(|| format!("cannot write {}", path.display()))
        .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("cannot flush {} to the disk", tmp.display())))
        .and_then(|()| std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes bytes to `path` atomically (see [`atomic_write_with`]).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |tmp| Ok(std::fs::write(tmp, bytes)?))
}

/// An error and its causes on one line, `outer: inner: …` as `{:#}` prints them, but each
/// cause once: a cause whose text the previous one already ends with (an error that prints
/// its source, then the source itself) is left out, so an OS error is never shown twice.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|last| last.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// Where two JSON values differ: one `(path, a, b)` per differing leaf, the path in dotted
/// form (`training.lr`, `milestones[2]`; empty for the root), the values as compact JSON
/// (`-` for a key one side lacks). Used to name each setting that differs between a recorded
/// configuration and the one given.
pub fn json_differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<(String, String, String)> {
    use serde_json::Value;
    fn walk(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<(String, String, String)>) {
        let show = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string());
        let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    walk(join(k), x.get(k), y.get(k), out);
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
                for (i, (u, v)) in x.iter().zip(y).enumerate() {
                    walk(format!("{path}[{i}]"), Some(u), Some(v), out);
                }
            }
            _ if a == b => {}
            _ => out.push((path.clone(), show(a), show(b))),
        }
    }
    let mut out = Vec::new();
    walk(String::new(), Some(a), Some(b), &mut out);
    out
}

/// Renames a damaged file aside — `NAME.damaged`, or `NAME.damaged.2`, … when taken — so
/// that it is kept for inspection but no longer read; returns the new path.
pub fn set_aside(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut target = path.with_file_name(format!("{name}.damaged"));
    let mut k = 2;
    while target.exists() {
        target = path.with_file_name(format!("{name}.damaged.{k}"));
        k += 1;
    }
    std::fs::rename(path, &target).with_context(|| format!("cannot set aside {} as {}", path.display(), target.display()))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_differences_name_each_leaf_with_both_values() {
        let a = json!({"seed": 1, "training": {"lr": 0.01, "milestones": [75, 90]}, "reg": "plain"});
        let b = json!({"seed": 7, "training": {"lr": 0.01, "milestones": [75, 91]}, "adv": "pgd"});
        let d = json_differences(&a, &b);
        assert_eq!(
            d,
            vec![
                ("adv".into(), "-".into(), "\"pgd\"".into()),
                ("reg".into(), "\"plain\"".into(), "-".into()),
                ("seed".into(), "1".into(), "7".into()),
                ("training.milestones[1]".into(), "90".into(), "91".into()),
            ]
        );
        assert!(json_differences(&a, &a).is_empty());
    }

    #[test]
    fn error_text_shows_each_cause_once() {
        #[derive(Debug)]
        struct Echo(std::io::Error);
        impl std::fmt::Display for Echo {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "write failed: {}", self.0)
            }
        }
        impl std::error::Error for Echo {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Echo(std::io::Error::from_raw_os_error(28))).context("cannot write r/x.safetensors");
        let text = error_text(&e);
        assert_eq!(text.matches("os error 28").count(), 1, "{text}");
        assert!(format!("{e:#}").matches("os error 28").count() == 2, "the case this guards against");
        assert!(text.starts_with("cannot write r/x.safetensors: write failed: "), "{text}");
    }

    #[test]
    fn set_aside_keeps_every_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("epoch-3.safetensors");
        std::fs::write(&p, b"one").unwrap();
        assert_eq!(set_aside(&p).unwrap(), dir.path().join("epoch-3.safetensors.damaged"));
        std::fs::write(&p, b"two").unwrap();
        assert_eq!(set_aside(&p).unwrap(), dir.path().join("epoch-3.safetensors.damaged.2"));
        assert!(!p.exists());
        assert_eq!(std::fs::read(dir.path().join("epoch-3.safetensors.damaged")).unwrap(), b"one");
    }
}
