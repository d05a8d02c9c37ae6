//! The results file: one CSV row per finished cell, appended under a lock so that several
//! processes (shards) can share one file, and written so that a kill at any instant leaves
//! neither a torn row nor a duplicate.
//!
//! Every operation holds an exclusive lock on `<file>.lock` (a separate file, so the CSV
//! itself may be rewritten by rename), repairs a torn last line if a previous writer died
//! mid-write, checks that the cell id is absent, and appends the header (for a new file) and
//! the row in one write followed by fsync.

use super::record::CELL_ID_COLUMN;
use anyhow::{bail, Context, Result};
use fs4::fs_std::FileExt;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A results CSV with a fixed header.
#[derive(Debug, Clone)]
pub struct ResultsStore {
    path: PathBuf,
    lock_path: PathBuf,
    header: Vec<String>,
}

impl ResultsStore {
    /// Opens (without creating) the results file at `path`, which must have `header` if it
    /// already holds rows.
    pub fn open(path: &Path, header: Vec<String>) -> Result<Self> {
        let mut lock_name = path.file_name().context("the results path has no file name")?.to_os_string();
        lock_name.push(".lock");
        let store = Self { path: path.to_path_buf(), lock_path: path.with_file_name(lock_name), header };
        store.read_rows()?;
        Ok(store)
    }

    /// The CSV file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the file's content with the lock held (the file is created if absent and
    /// a torn last line is cut off first).
    fn locked<T>(&self, f: impl FnOnce(&mut File, &str) -> Result<T>) -> Result<T> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .with_context(|| format!("cannot open the lock file {}", self.lock_path.display()))?;
        FileExt::lock_exclusive(&lock).with_context(|| format!("cannot lock {}", self.lock_path.display()))?;
        let result = (|| {
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&self.path)
                .with_context(|| format!("cannot open {}", self.path.display()))?;
            let mut content = String::new();
            file.read_to_string(&mut content).with_context(|| format!("cannot read {}", self.path.display()))?;
            if !content.is_empty() && !content.ends_with('\n') {
                // A writer was killed inside its single write: drop the partial line.
                let keep = content.rfind('\n').map(|i| i + 1).unwrap_or(0);
                file.set_len(keep as u64).with_context(|| format!("cannot repair {}", self.path.display()))?;
                file.sync_data()?;
                content.truncate(keep);
            }
            f(&mut file, &content)
        })();
        let _ = FileExt::unlock(&lock);
        result
    }

    /// Parses the content, checking the header.
    fn parse(&self, content: &str) -> Result<Vec<csv::StringRecord>> {
        if content.is_empty() {
            return Ok(Vec::new());
        }
        let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(content.as_bytes());
        let found: Vec<String> = r.headers()?.iter().map(|s| s.to_string()).collect();
        if found != self.header {
            bail!(
                "{} was written with other columns (a different plan or ε list):\n  found:    {}\n  expected: {}\n\
                 Use another --results directory or plan name, or move the old file away.",
                self.path.display(),
                found.join(","),
                self.header.join(",")
            );
        }
        let mut rows = Vec::new();
        for (i, rec) in r.records().enumerate() {
            rows.push(rec.with_context(|| format!("{}: line {} is not a valid row", self.path.display(), i + 2))?);
        }
        Ok(rows)
    }

    /// The index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    fn id_column(&self) -> usize {
        self.header.iter().position(|h| h == CELL_ID_COLUMN).expect("every results header has a cell_id column")
    }

    /// Every row, read under the lock.
    pub fn read_rows(&self) -> Result<Vec<csv::StringRecord>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        self.locked(|_, content| self.parse(content))
    }

    /// The ids of the cells that have a row.
    pub fn done_ids(&self) -> Result<HashSet<String>> {
        let col = self.id_column();
        Ok(self.read_rows()?.iter().map(|r| r[col].to_string()).collect())
    }

    /// Appends `row` unless a row with its cell id is already there; returns whether it was
    /// written.
    pub fn append(&self, row: &[String]) -> Result<bool> {
        if row.len() != self.header.len() {
            bail!("a row of {} fields for {} columns", row.len(), self.header.len());
        }
        let col = self.id_column();
        self.locked(|file, content| {
            let rows = self.parse(content)?;
            if rows.iter().any(|r| &r[col] == row[col].as_str()) {
                return Ok(false);
            }
            let mut bytes = Vec::new();
            {
                let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(&mut bytes);
                if content.is_empty() {
                    w.write_record(&self.header)?;
                }
                w.write_record(row)?;
                w.flush()?;
            }
            file.write_all(&bytes).with_context(|| format!("cannot append to {}", self.path.display()))?;
            file.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
            Ok(true)
        })
    }

    /// The ids of the cells whose row has status `failed`.
    pub fn failed_ids(&self) -> Result<HashSet<String>> {
        let (id, status) = (self.id_column(), self.column(super::record::col::STATUS).context("no status column")?);
        Ok(self.read_rows()?.iter().filter(|r| &r[status] == "failed").map(|r| r[id].to_string()).collect())
    }

    /// Removes the rows whose `status` column is `failed` and whose cell `mine` accepts (the
    /// cells of this shard: another shard's task may be about to skip its own), so that
    /// those cells run again; returns how many were removed.
    pub fn remove_failed(&self, mine: impl Fn(&str) -> bool) -> Result<usize> {
        if !self.path.exists() {
            return Ok(0);
        }
        let status = self.header.iter().position(|h| h == super::record::col::STATUS).context("no status column")?;
        self.locked(|_, content| {
            let rows = self.parse(content)?;
            let id = self.id_column();
            let keep: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[status] != "failed" || !mine(&r[id])).collect();
            let removed = rows.len() - keep.len();
            if removed > 0 {
                let mut bytes = Vec::new();
                {
                    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(&mut bytes);
                    w.write_record(&self.header)?;
                    for r in keep {
                        w.write_record(r)?;
                    }
                    w.flush()?;
                }
                crate::util::atomic_write_with(&self.path, |tmp| {
                    let mut f = File::create(tmp)?;
                    f.write_all(&bytes)?;
                    f.sync_all()?;
                    Ok(())
                })?;
            }
            Ok(removed)
        })
    }
}

/// An exclusive claim on a cell's work directory, so two processes never train the same cell
/// into the same checkpoint; released when dropped or when the process dies.
#[derive(Debug)]
pub struct CellLock {
    file: File,
}

impl CellLock {
    /// Claims `dir` (created if needed); `None` if another process holds it.
    pub fn try_claim(dir: &Path) -> Result<Option<Self>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(true) => Ok(Some(Self { file })),
            Ok(false) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

impl Drop for CellLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<String> {
        ["plan", "cell_id", "status", "x"].iter().map(|s| s.to_string()).collect()
    }
    fn row(id: &str, status: &str) -> Vec<String> {
        ["p", id, status, "a,\"b\""].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn appends_once_per_id_and_repairs_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let s = ResultsStore::open(&path, header()).unwrap();
        assert!(s.append(&row("a", "ok")).unwrap());
        assert!(!s.append(&row("a", "ok")).unwrap());
        assert!(s.append(&row("b", "failed")).unwrap());
        // Simulate a writer killed mid-row.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"p,c,ok,\"half").unwrap();
        drop(f);
        assert!(s.append(&row("c", "ok")).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(!text.contains("half"));
        assert_eq!(s.done_ids().unwrap().len(), 3);
        assert_eq!(s.failed_ids().unwrap(), ["b".to_string()].into_iter().collect());
        assert_eq!(s.remove_failed(|id| id != "b").unwrap(), 0, "another shard's failed row stays");
        assert_eq!(s.remove_failed(|_| true).unwrap(), 1);
        assert_eq!(s.done_ids().unwrap(), ["a", "c"].iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn refuses_a_file_with_other_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, "plan,cell_id\np,a\n").unwrap();
        let err = ResultsStore::open(&path, header()).unwrap_err().to_string();
        assert!(err.contains("other columns"), "{err}");
    }

    #[test]
    fn a_cell_claim_excludes_a_second_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = CellLock::try_claim(dir.path()).unwrap();
        assert!(a.is_some());
        assert!(CellLock::try_claim(dir.path()).unwrap().is_none());
        drop(a);
        assert!(CellLock::try_claim(dir.path()).unwrap().is_some());
    }
}
