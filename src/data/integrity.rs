//! What a data folder should hold, and whether it still does: `normlab data` writes each
//! batch file's size and SHA-256 into the folder's import record (`normlab-import.txt`, one
//! `file: NAME BYTES SHA256` line per file). Every reader checks the sizes — so a batch file
//! cut at a record boundary (a 1,000-image `test_batch.bin` that would otherwise pass for a
//! small test set) is refused — and [`verify`] checks the checksums too (`normlab data
//! --verify DIR`, and `normlab run` before its first cell). A folder without an import record
//! (a copy made elsewhere) is read as it is, with a one-line note.

use super::binary::{RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use super::import::PROVENANCE_FILE;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// One batch file as the import wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSum {
    /// The file name (`data_batch_1.bin`, ..., `test_batch.bin`).
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

impl FileSum {
    /// The size and checksum of `bytes`, written as file `name`.
    pub fn of(name: &str, bytes: &[u8]) -> Self {
        Self { name: name.to_string(), bytes: bytes.len() as u64, sha256: hex(&Sha256::digest(bytes)) }
    }

    /// The import record's line for this file.
    pub fn line(&self) -> String {
        format!("{LINE_PREFIX}{} {} {}", self.name, self.bytes, self.sha256)
    }
}

const LINE_PREFIX: &str = "file: ";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a folder's import record says about its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// No import record: the folder was not written by `normlab data`.
    Absent,
    /// An import record without sizes and checksums (written by an older normlab).
    NoSums,
    /// Each batch file's size and checksum.
    Sums(Vec<FileSum>),
}

/// Reads the import record of `dir`; a `file:` line that does not parse is an error naming it.
pub fn recorded(dir: &Path) -> Result<Recorded> {
    let path = dir.join(PROVENANCE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recorded::Absent),
        Err(e) => return Err(e).with_context(|| format!("cannot read the import record {}", path.display())),
    };
    let mut sums = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix(LINE_PREFIX) else { continue };
        let parts: Vec<&str> = rest.split_whitespace().collect();
        let parsed = match parts.as_slice() {
            [name, bytes, sha] if sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()) => {
                bytes.parse().ok().map(|bytes| FileSum { name: name.to_string(), bytes, sha256: sha.to_ascii_lowercase() })
            }
            _ => None,
        };
        match parsed {
            Some(s) => sums.push(s),
            None => bail!(
                "{}:{}: '{line}' is not a file line (expected `file: NAME BYTES SHA256`): the import record is damaged; import the data again",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(if sums.is_empty() { Recorded::NoSums } else { Recorded::Sums(sums) })
}

fn records(bytes: u64) -> String {
    if bytes.is_multiple_of(RECORD_BYTES as u64) {
        format!("{} records", bytes / RECORD_BYTES as u64)
    } else {
        format!("{:.2} records", bytes as f64 / RECORD_BYTES as f64)
    }
}

fn reimport(dir: &Path) -> String {
    format!(
        "the file was cut short, extended or replaced after the import: restore it, or import the data again \
         (`normlab data --source SRC --out DIR` into a new DIR, then replace {})",
        dir.display()
    )
}

/// Checks every batch file of `dir` against the sizes its import record holds (cheap: file
/// metadata only). Returns a one-line note when there is nothing to check against.
pub fn check_sizes(dir: &Path) -> Result<Option<String>> {
    let sums = match recorded(dir)? {
        Recorded::Sums(s) => s,
        other => return Ok(Some(note(dir, &other))),
    };
    for f in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let Some(want) = sums.iter().find(|s| s.name == *f) else {
            bail!("the import record {} has no line for {f}: it is damaged; import the data again", dir.join(PROVENANCE_FILE).display());
        };
        let path = dir.join(f);
        let got = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?.len();
        if got != want.bytes {
            bail!(
                "{} holds {} ({got} bytes), but the import record {} says {} ({} bytes): {}",
                path.display(),
                records(got),
                dir.join(PROVENANCE_FILE).display(),
                records(want.bytes),
                want.bytes,
                reimport(dir)
            );
        }
    }
    Ok(None)
}

/// The note for a folder whose files cannot be checked.
fn note(dir: &Path, recorded: &Recorded) -> String {
    match recorded {
        Recorded::Absent => format!(
            "{} has no import record ({PROVENANCE_FILE}; not written by `normlab data`): its files are read as they are, without size or checksum checks",
            dir.display()
        ),
        _ => format!(
            "{}/{PROVENANCE_FILE} records no sizes or checksums (an older normlab wrote it): the files are read unchecked; import again to add them",
            dir.display()
        ),
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Every batch file has its recorded size and checksum: one line per file.
    Ok(Vec<String>),
    /// Nothing to verify against: the note says why.
    Unchecked(String),
}

/// Checks the size and SHA-256 of every batch file of `dir` against its import record
/// (the files are hashed in parallel); an error names each file that differs.
pub fn verify(dir: &Path) -> Result<Verified> {
    use rayon::prelude::*;
    if !dir.is_dir() {
        bail!("{} is not a directory: give the folder `normlab data --out` wrote", dir.display());
    }
    let sums = match recorded(dir)? {
        Recorded::Sums(s) => s,
        other => return Ok(Verified::Unchecked(note(dir, &other))),
    };
    check_sizes(dir)?;
    let results: Vec<Result<(String, Option<String>)>> = TRAIN_FILES
        .par_iter()
        .chain([&TEST_FILE])
        .map(|f| {
            let want = sums.iter().find(|s| s.name == *f).expect("check_sizes found every file");
            let path = dir.join(f);
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let got = FileSum::of(f, &bytes);
            Ok(if got.sha256 == want.sha256 {
                (format!("ok  {f}: {}, SHA-256 {}", records(got.bytes), got.sha256), None)
            } else {
                (String::new(), Some(format!("{}: SHA-256 {}, the import record says {}", path.display(), got.sha256, want.sha256)))
            })
        })
        .collect();
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for r in results {
        match r? {
            (line, None) => lines.push(line),
            (_, Some(b)) => bad.push(b),
        }
    }
    if !bad.is_empty() {
        bail!("{} batch file(s) of {} differ from the import: {}; {}", bad.len(), dir.display(), bad.join("; "), reimport(dir));
    }
    Ok(Verified::Ok(lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{write_dir, Cifar10, Split, IMAGE_BYTES};

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let split = |n: usize| Split::new(vec![7u8; n * IMAGE_BYTES], (0..n).map(|i| (i % 10) as u8).collect()).unwrap();
        let sums = write_dir(&Cifar10 { train: split(10), test: split(4) }, dir.path()).unwrap();
        let lines: Vec<String> = sums.iter().map(FileSum::line).collect();
        std::fs::write(dir.path().join(PROVENANCE_FILE), format!("source: test\n{}\n", lines.join("\n"))).unwrap();
        dir
    }

    #[test]
    fn sizes_and_checksums_catch_a_cut_or_changed_file() {
        let dir = folder();
        assert_eq!(check_sizes(dir.path()).unwrap(), None);
        assert!(matches!(verify(dir.path()).unwrap(), Verified::Ok(l) if l.len() == 6));
        // Same size, one byte changed: only the checksum sees it.
        let test = dir.path().join(TEST_FILE);
        let mut bytes = std::fs::read(&test).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&test, &bytes).unwrap();
        assert_eq!(check_sizes(dir.path()).unwrap(), None);
        let err = format!("{:#}", verify(dir.path()).unwrap_err());
        assert!(err.contains("test_batch.bin: SHA-256") && err.contains("import the data again"), "{err}");
        // Cut at a record boundary: the size check names both counts.
        std::fs::write(&test, &bytes[..RECORD_BYTES * 3]).unwrap();
        let err = format!("{:#}", check_sizes(dir.path()).unwrap_err());
        assert!(err.contains("test_batch.bin holds 3 records") && err.contains("says 4 records"), "{err}");
    }

    #[test]
    fn a_folder_without_sums_gets_a_note_and_a_damaged_record_an_error() {
        let dir = folder();
        let record = dir.path().join(PROVENANCE_FILE);
        std::fs::write(&record, "source: old\n").unwrap();
        assert!(check_sizes(dir.path()).unwrap().unwrap().contains("records no sizes"));
        std::fs::remove_file(&record).unwrap();
        assert!(matches!(verify(dir.path()).unwrap(), Verified::Unchecked(n) if n.contains("no import record")));
        std::fs::write(&record, "file: test_batch.bin 12\n").unwrap();
        let err = format!("{:#}", recorded(dir.path()).unwrap_err());
        assert!(err.contains("normlab-import.txt:1") && err.contains("not a file line"), "{err}");
    }
}
