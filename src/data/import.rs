//! `normlab data`: turns a CIFAR-10 source into a directory in the official binary layout.
//!
//! Sources, told apart by their contents (never by a baked path):
//! - the official binary archive (cifar-10-binary.tar.gz, entries under
//!   cifar-10-batches-bin/) or a directory of its extracted files (the directory itself or
//!   one folder below it); records keep their original order;
//! - an image-folder archive (.tar.gz or .tar) or directory `<split>/<class>/<n>.jpg|png`,
//!   decoded in parallel and shuffled with a fixed seed (see [`super::folder`]);
//! - an `http(s)://` or `file://` URL of either archive (see [`super::download`]).
//!
//! The output is written into a temporary directory beside DIR, read back and checked, then
//! renamed to DIR, so a killed import never leaves a half-written DIR; an exclusive lock
//! beside DIR keeps two imports apart. A run on a DIR that already holds a complete set does
//! nothing and says so.

use super::binary::{self, META_FILE, TEST_FILE, TRAIN_FILES};
use super::dataset::Cifar10;
use super::download::{self, Md5Check};
use super::folder::{self, Entry};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The file in DIR that records where the data came from, and each batch file's size and
/// SHA-256 (see [`super::integrity`]).
pub const PROVENANCE_FILE: &str = "normlab-import.txt";
/// Files at most read from a directory source (guards against pointing at a huge tree).
const MAX_DIR_FILES: usize = 200_000;

/// What to import and where.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Path, or http(s):// or file:// URL.
    pub source: String,
    /// Output directory (created; must not hold anything else).
    pub out: PathBuf,
    /// MD5 check: `None` checks URLs against the official MD5 and local paths not at all.
    pub md5: Option<Md5Check>,
    /// Shuffle seed for image-folder sources.
    pub seed: u64,
}

/// What an import did, as the lines it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// DIR was already complete; nothing was written.
    AlreadyComplete(String),
    /// DIR was written; the summary says from what.
    Imported(String),
}

/// The kind of a source, found from its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The official batch files (archive or directory).
    Binary,
    /// `<split>/<class>/<image>` files (archive or directory).
    ImageFolder,
}

/// Runs an import (see the module doc).
pub fn import(opts: &ImportOptions) -> Result<Outcome> {
    let out = &opts.out;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| n != ".." && n != ".");
    let Some(name) = name else { bail!("--out {} must name a directory to create, e.g. data/cifar10", out.display()) };
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let _lock = DirLock::acquire(&parent.join(format!(".{name}.lock")), out)?;
    if let Some(done) = existing_output(out)? {
        return Ok(Outcome::AlreadyComplete(format!("{} already holds a complete import ({done}); nothing to do (remove it to import again)", out.display())));
    }
    let started = std::time::Instant::now();
    let (path, downloaded) = local_source(opts, &parent, &name)?;
    let (data, kind) = read_source(&path, &opts.source, opts.seed)?;
    let kind_text = match kind {
        SourceKind::Binary => "official binary batches (record order kept)".to_string(),
        SourceKind::ImageFolder => format!("image folder (shuffled with seed {}, test seed {} ^ {:#x})", opts.seed, opts.seed, folder::TEST_SEED_SALT),
    };
    let summary = format!(
        "source: {}\nkind: {kind_text}\nsize: {}\ntrain images per class: {:?}\ntest images per class: {:?}\n",
        opts.source,
        binary::describe(&data),
        binary::label_histogram(&data.train),
        binary::label_histogram(&data.test)
    );
    write_atomically(&data, out, &parent, &name, &summary)?;
    if let Some(file) = downloaded {
        std::fs::remove_file(&file).with_context(|| format!("cannot remove the downloaded {}", file.display()))?;
    }
    Ok(Outcome::Imported(format!("imported into {} in {:.1} s\n{summary}", out.display(), started.elapsed().as_secs_f64())))
}

/// `Some(description)` when `out` already holds a valid set, `None` when it is absent or an
/// empty directory; an error when it holds something else (never overwritten).
fn existing_output(out: &Path) -> Result<Option<String>> {
    if !out.exists() {
        return Ok(None);
    }
    if !out.is_dir() {
        bail!("--out {} exists and is not a directory: choose another --out", out.display());
    }
    let empty = std::fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?.next().is_none();
    if empty {
        return Ok(None);
    }
    match binary::load_dir(out) {
        Ok(data) => {
            let provenance = std::fs::read_to_string(out.join(PROVENANCE_FILE)).unwrap_or_default();
            let from = provenance.lines().find_map(|l| l.strip_prefix("source: ")).map(|s| format!(" from {s}")).unwrap_or_default();
            Ok(Some(format!("{}{from}", binary::describe(&data))))
        }
        Err(e) => bail!("--out {} exists but is not a complete CIFAR-10 directory ({e:#}): remove it or choose another --out", out.display()),
    }
}

/// The local file or directory to read, downloading a URL first (the second value is the
/// downloaded file, removed after a successful import), with the MD5 check applied.
fn local_source(opts: &ImportOptions, parent: &Path, name: &str) -> Result<(PathBuf, Option<PathBuf>)> {
    if !download::is_url(&opts.source) {
        let path = PathBuf::from(&opts.source);
        if !path.exists() {
            bail!("--source {} does not exist: give the CIFAR-10 archive, a directory of it, or an http(s):// or file:// URL", path.display());
        }
        if let Some(check) = &opts.md5 {
            if path.is_dir() && *check != Md5Check::Skip {
                bail!("--md5 applies to a file, but --source {} is a directory", path.display());
            }
            download::verify_md5(&path, check)?;
        }
        return Ok((path, None));
    }
    let check = Md5Check::for_url(opts.md5.as_ref());
    if let Some(path) = download::file_url_path(&opts.source)? {
        if !path.is_file() {
            bail!("{}: {} is not a file", opts.source, path.display());
        }
        download::verify_md5(&path, &check)?;
        return Ok((path, None));
    }
    let dest = parent.join(format!(".{name}.{}", download::url_file_name(&opts.source)));
    if dest.is_file() {
        eprintln!("reusing the earlier download {}", dest.display());
    } else {
        download::fetch(&opts.source, &dest)?;
    }
    if let Err(e) = download::verify_md5(&dest, &check) {
        let _ = std::fs::remove_file(&dest);
        return Err(e.context(format!("downloaded {} removed: run again to fetch it anew", dest.display())));
    }
    Ok((dest.clone(), Some(dest)))
}

/// Reads a local source of either kind into memory (`shown` names it in messages).
pub fn read_source(path: &Path, shown: &str, seed: u64) -> Result<(Cifar10, SourceKind)> {
    if path.is_dir() {
        if let Some(dir) = binary_dir(path)? {
            let data = binary::load_dir(&dir)?;
            return Ok((data, SourceKind::Binary));
        }
        let entries = dir_entries(path)?;
        return Ok((folder::decode(shown, entries, seed)?, SourceKind::ImageFolder));
    }
    let entries = archive_entries(path)?;
    if entries.iter().any(|e| binary_name(&e.path).is_some()) {
        return Ok((binary_from_entries(shown, &entries)?, SourceKind::Binary));
    }
    Ok((folder::decode(shown, entries, seed)?, SourceKind::ImageFolder))
}

/// The batch file name (`data_batch_1.bin` ... `test_batch.bin`) `path` ends with, if any.
fn binary_name(path: &str) -> Option<&'static str> {
    let file = path.rsplit('/').next()?;
    TRAIN_FILES.iter().chain([&TEST_FILE]).find(|n| **n == file).copied()
}

/// The directory holding batch files: `dir` itself or its one subfolder that has them.
fn binary_dir(dir: &Path) -> Result<Option<PathBuf>> {
    let has_any = |d: &Path| TRAIN_FILES.iter().chain([&TEST_FILE]).any(|f| d.join(f).exists());
    if has_any(dir) {
        return Ok(Some(dir.to_path_buf()));
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = entry?.path();
        if p.is_dir() && has_any(&p) {
            found.push(p);
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => bail!("{} holds several folders of CIFAR-10 batch files ({}): give one of them", dir.display(), found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
    }
}

/// The official set from archive entries: each of the six batch files exactly once.
fn binary_from_entries(shown: &str, entries: &[Entry]) -> Result<Cifar10> {
    let pick = |name: &str| -> Result<&Entry> {
        let found: Vec<&Entry> = entries.iter().filter(|e| binary_name(&e.path) == Some(name)).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => bail!("{shown}: archive has no {name}: expected {} and {TEST_FILE} (under cifar-10-batches-bin/)", TRAIN_FILES.join(", ")),
            _ => bail!("{shown}: archive holds {name} {} times", found.len()),
        }
    };
    let mut train = super::dataset::Split::default();
    for name in TRAIN_FILES {
        let e = pick(name)?;
        let part = binary::parse_records(&format!("{shown}: {}", e.path), &e.bytes)?;
        train.images.extend_from_slice(&part.images);
        train.labels.extend_from_slice(&part.labels);
    }
    let e = pick(TEST_FILE)?;
    let test = binary::parse_records(&format!("{shown}: {}", e.path), &e.bytes)?;
    Ok(Cifar10 { train, test })
}

/// Whether a relative path has a hidden component (`.DS_Store`, `._x.jpg`, `.git/`).
fn is_hidden(rel: &Path) -> bool {
    rel.components().any(|c| matches!(c, Component::Normal(s) if s.to_string_lossy().starts_with('.')))
}

/// The regular, non-hidden files under `dir`, with their contents.
fn dir_entries(dir: &Path) -> Result<Vec<Entry>> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = entry?.path();
            let rel = p.strip_prefix(dir).expect("below dir").to_path_buf();
            if is_hidden(&rel) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                files.push((p, rel));
                if files.len() > MAX_DIR_FILES {
                    bail!("{} holds more than {MAX_DIR_FILES} files: not a CIFAR-10 image folder", dir.display());
                }
            }
        }
    }
    use rayon::prelude::*;
    files
        .into_par_iter()
        .map(|(p, rel)| {
            let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            let path = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            Ok(Entry { path, bytes })
        })
        .collect()
}

/// The regular, non-hidden files of a .tar.gz or .tar archive, with their contents. A file
/// that is neither is refused with what it looks like.
fn archive_entries(path: &Path) -> Result<Vec<Entry>> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut head = vec![0u8; 512];
    let n = read_up_to(&mut file, &mut head)?;
    head.truncate(n);
    let gz = head.starts_with(&[0x1f, 0x8b]);
    let tar = head.len() >= 262 && &head[257..262] == b"ustar";
    if !gz && !tar {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let mut msg = format!(
            "--source {} is not a CIFAR-10 source: expected a directory, a .tar.gz or .tar archive, or an http(s):// or file:// URL; \
             found a {size}-byte file starting with bytes {}",
            path.display(),
            hex.join(" ")
        );
        let looks_like_batch = path.extension().is_some_and(|e| e == "bin") || size.is_multiple_of(binary::RECORD_BYTES as u64);
        if looks_like_batch {
            msg += &format!(
                ". It looks like a single batch file{}: give the directory holding all of {} and {TEST_FILE}, or cifar-10-binary.tar.gz",
                if size.is_multiple_of(binary::RECORD_BYTES as u64) { "" } else { " (truncated: not a whole number of 3073-byte records)" },
                TRAIN_FILES.join(", ")
            );
        }
        bail!(msg);
    }
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn Read> = if gz { Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file))) } else { Box::new(std::io::BufReader::new(file)) };
    let context = || format!("reading archive {}: the file is truncated or corrupt", path.display());
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    for entry in archive.entries().with_context(context)? {
        let mut entry = entry.with_context(context)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry.path().with_context(context)?.into_owned();
        if is_hidden(&rel) {
            continue;
        }
        let rel: Vec<String> = rel.components().filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        }).collect();
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).with_context(context)?;
        entries.push(Entry { path: rel.join("/"), bytes });
    }
    if entries.is_empty() {
        bail!("archive {} holds no files: expected cifar-10-batches-bin/*.bin or <split>/<class>/<image>", path.display());
    }
    Ok(entries)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Writes `data` and its provenance into `.{name}.partial` beside `out`, reads it back and
/// compares, then renames it to `out` (an absent or empty directory).
fn write_atomically(data: &Cifar10, out: &Path, parent: &Path, name: &str, provenance: &str) -> Result<()> {
    let tmp = parent.join(format!(".{name}.partial"));
    if tmp.exists() {
        eprintln!("removing {} left by an interrupted import", tmp.display());
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    let result = (|| -> Result<()> {
        let sums = binary::write_dir(data, &tmp)?;
        let mut record = provenance.to_string();
        for s in &sums {
            record.push_str(&s.line());
            record.push('\n');
        }
        std::fs::write(tmp.join(PROVENANCE_FILE), record).with_context(|| format!("cannot write {}", tmp.join(PROVENANCE_FILE).display()))?;
        let back = binary::load_dir(&tmp)?;
        if back.train.images != data.train.images || back.train.labels != data.train.labels || back.test.images != data.test.images || back.test.labels != data.test.labels {
            bail!("{} does not read back as written", tmp.display());
        }
        debug_assert!(tmp.join(META_FILE).is_file());
        std::fs::rename(&tmp, out).with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// An exclusive lock on a file beside DIR, held for the import and removed after.
struct DirLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(path: &Path, out: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).with_context(|| format!("cannot create lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { path: path.to_path_buf(), _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!("another `normlab data` is writing {} (lock {}): wait for it to finish", out.display(), path.display()),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_import_into_the_same_dir_is_refused_while_the_first_runs() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".out.lock");
        let first = DirLock::acquire(&lock, &dir.path().join("out")).unwrap();
        let err = DirLock::acquire(&lock, &dir.path().join("out")).err().expect("second lock refused").to_string();
        assert!(err.contains("another `normlab data` is writing"), "{err}");
        drop(first);
        assert!(!lock.exists());
        DirLock::acquire(&lock, &dir.path().join("out")).unwrap();
    }

    #[test]
    fn names_batch_files_and_hidden_paths() {
        assert_eq!(binary_name("cifar-10-batches-bin/data_batch_4.bin"), Some("data_batch_4.bin"));
        assert_eq!(binary_name("x/data_batch_6.bin"), None);
        assert!(is_hidden(Path::new("top/._0001.jpg")) && is_hidden(Path::new(".git/x")));
        assert!(!is_hidden(Path::new("top/train/cat/0001.jpg")));
    }
}
