//! The official CIFAR-10 binary layout ("CIFAR-10 binary version" of the dataset's home page):
//! `data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin` and `batches.meta.txt` in one
//! directory. Each batch file is a sequence of 3,073-byte records: one label byte (0..9) and
//! 3,072 pixel bytes (planes R, G, B of 32×32 pixels, row-major). The full set holds 10,000
//! records per file; smaller files of whole records (tiny test sets) are read too.
//!
//! This is the one format normlab keeps data in: `normlab data` writes it, and training, the
//! attacks and the theory commands read it with [`load_dir`]. candle-datasets'
//! `vision::cifar::load_dir` reads the full-size directories written here.

use super::dataset::{Cifar10, Split, CLASSES, IMAGE_BYTES};
use super::integrity::FileSum;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Bytes per record: one label byte and the image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records per batch file in the full data set.
pub const FULL_RECORDS_PER_FILE: usize = 10_000;
/// Training images of the full dataset.
pub const TRAIN_IMAGES: usize = TRAIN_FILES.len() * FULL_RECORDS_PER_FILE;
/// The five training batch files, in order.
pub const TRAIN_FILES: [&str; 5] = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The class-name file: one name per line in label order.
pub const META_FILE: &str = "batches.meta.txt";

/// Parses the records of one batch file (`name` is only used in error messages): checks that
/// the size is a whole, non-zero number of records and that every label is in 0..9.
pub fn parse_records(name: &str, bytes: &[u8]) -> Result<Split> {
    if bytes.is_empty() {
        bail!("{name} is empty: expected records of {RECORD_BYTES} bytes (1 label + {IMAGE_BYTES} pixels)");
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        bail!(
            "{name} holds {} bytes, not a whole number of {RECORD_BYTES}-byte records ({} records + {} bytes): \
             the file is truncated or is not a CIFAR-10 batch (full files hold {FULL_RECORDS_PER_FILE} records, {} bytes)",
            bytes.len(),
            bytes.len() / RECORD_BYTES,
            bytes.len() % RECORD_BYTES,
            FULL_RECORDS_PER_FILE * RECORD_BYTES
        );
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if label as usize >= CLASSES.len() {
            bail!(
                "{name}: record {i} (byte offset {}) has label {label}, expected 0..9: \
                 the file is corrupt or is not a CIFAR-10 batch (CIFAR-100 files have 2 label bytes)",
                i * RECORD_BYTES
            );
        }
        labels.push(label);
        images.extend_from_slice(&record[1..]);
    }
    Split::new(images, labels)
}

/// Serializes a split as records (label byte then pixels), the inverse of [`parse_records`].
pub fn records(split: &Split) -> Vec<u8> {
    let mut out = Vec::with_capacity(split.len() * RECORD_BYTES);
    for i in 0..split.len() {
        out.push(split.labels[i]);
        out.extend_from_slice(split.image(i));
    }
    out
}

/// Whether `dir` holds all six batch files (it may still be invalid; [`load_dir`] checks).
pub fn has_batch_files(dir: &Path) -> bool {
    TRAIN_FILES.iter().chain([&TEST_FILE]).all(|f| dir.join(f).is_file())
}

/// The number of training and test images in `dir`'s batch files, from their sizes (no
/// file is read); an error names a file that is not a whole number of records.
pub fn split_sizes(dir: &Path) -> Result<(usize, usize)> {
    let count = |name: &str| -> Result<usize> {
        let path = dir.join(name);
        let bytes = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?.len() as usize;
        if !bytes.is_multiple_of(RECORD_BYTES) {
            bail!("{} holds {bytes} bytes, not a whole number of {RECORD_BYTES}-byte records: the file is truncated", path.display());
        }
        Ok(bytes / RECORD_BYTES)
    };
    let train = TRAIN_FILES.iter().map(|f| count(f)).sum::<Result<usize>>()?;
    Ok((train, count(TEST_FILE)?))
}

/// Reads a directory in the official layout, validating every file: all six batch files
/// present, their sizes those of the folder's import record (see [`super::integrity`]; a
/// folder without one is read with a one-line note on stderr), sizes whole numbers of
/// records, labels in 0..9. Errors name the file and what was expected and found. Sets
/// smaller than 10,000 records per file are accepted (see [`describe`] to report the counts).
pub fn load_dir(dir: &Path) -> Result<Cifar10> {
    if !dir.is_dir() {
        bail!(
            "CIFAR-10 directory {} does not exist or is not a directory: create it with \
             `normlab data --source SRC --out {}`",
            dir.display(),
            dir.display()
        );
    }
    let missing: Vec<&str> = TRAIN_FILES.iter().chain([&TEST_FILE]).filter(|f| !dir.join(f).is_file()).copied().collect();
    if !missing.is_empty() {
        bail!(
            "{} is not a complete CIFAR-10 binary directory: missing {} (expected {} and {TEST_FILE}); \
             create it with `normlab data --source SRC --out DIR`",
            dir.display(),
            missing.join(", "),
            TRAIN_FILES.join(", ")
        );
    }
    if let Some(note) = super::integrity::check_sizes(dir)? {
        eprintln!("note: {note}");
    }
    let read = |name: &str| -> Result<Split> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        parse_records(&path.display().to_string(), &bytes)
    };
    let mut train = Split::default();
    for name in TRAIN_FILES {
        let part = read(name)?;
        train.images.extend_from_slice(&part.images);
        train.labels.extend_from_slice(&part.labels);
    }
    let test = read(TEST_FILE)?;
    Ok(Cifar10 { train, test })
}

/// One line on the size of a data set: counts, and whether it is the full CIFAR-10 or a
/// reduced set (full: 50,000 train, 10,000 test).
pub fn describe(data: &Cifar10) -> String {
    let full = data.train.len() == TRAIN_FILES.len() * FULL_RECORDS_PER_FILE && data.test.len() == FULL_RECORDS_PER_FILE;
    format!(
        "{} train, {} test images{}",
        data.train.len(),
        data.test.len(),
        if full { " (full CIFAR-10)" } else { " (reduced set: full CIFAR-10 has 50000 train, 10000 test)" }
    )
}

/// Images per class label, for reports and checks.
pub fn label_histogram(split: &Split) -> [usize; 10] {
    let mut h = [0usize; 10];
    for &l in &split.labels {
        h[l as usize] += 1;
    }
    h
}

/// Writes `data` into `dir` (created if needed) in the official layout: the training split
/// cut in order into five batch files (sizes differ by at most one record when the count is
/// not a multiple of five), the test split, and the class names; returns each batch file's
/// size and checksum, for the import record. Files are written in place; `normlab data`
/// calls this on a temporary directory that it renames when complete.
pub fn write_dir(data: &Cifar10, dir: &Path) -> Result<Vec<FileSum>> {
    let n = data.train.len();
    if n < TRAIN_FILES.len() {
        bail!("cannot write {n} training images into {} batch files: need at least one per file", TRAIN_FILES.len());
    }
    if data.test.is_empty() {
        bail!("cannot write an empty test split");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    let mut sums = Vec::new();
    let mut start = 0;
    for (k, name) in TRAIN_FILES.iter().enumerate() {
        let end = start + n / TRAIN_FILES.len() + usize::from(k < n % TRAIN_FILES.len());
        let part = Split { images: data.train.images[start * IMAGE_BYTES..end * IMAGE_BYTES].to_vec(), labels: data.train.labels[start..end].to_vec() };
        let bytes = records(&part);
        write(name, &bytes)?;
        sums.push(FileSum::of(name, &bytes));
        start = end;
    }
    let bytes = records(&data.test);
    write(TEST_FILE, &bytes)?;
    sums.push(FileSum::of(TEST_FILE, &bytes));
    let mut meta = CLASSES.join("\n");
    meta.push_str("\n\n");
    write(META_FILE, meta.as_bytes())?;
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize, offset: usize) -> Split {
        let images = (0..n * IMAGE_BYTES).map(|i| ((i * 7 + offset) % 256) as u8).collect();
        Split::new(images, (0..n).map(|i| ((i + offset) % 10) as u8).collect()).unwrap()
    }

    #[test]
    fn write_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let data = Cifar10 { train: split(12, 0), test: split(3, 5) };
        write_dir(&data, dir.path()).unwrap();
        // 12 records over 5 files: 3, 3, 2, 2, 2.
        let sizes: Vec<u64> = TRAIN_FILES.iter().map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len()).collect();
        assert_eq!(sizes, [3, 3, 2, 2, 2].map(|r| r * RECORD_BYTES as u64));
        let back = load_dir(dir.path()).unwrap();
        assert_eq!(back.train.images, data.train.images);
        assert_eq!(back.train.labels, data.train.labels);
        assert_eq!(back.test.images, data.test.images);
        assert_eq!(back.test.labels, data.test.labels);
        let meta = std::fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        assert_eq!(meta.lines().next(), Some("airplane"));
        assert!(describe(&back).contains("reduced set"));
    }

    #[test]
    fn refuses_truncated_files_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(&Cifar10 { train: split(10, 0), test: split(2, 0) }, dir.path()).unwrap();
        let path = dir.path().join("data_batch_3.bin");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(err.contains("data_batch_3.bin") && err.contains("not a whole number"), "{err}");
    }

    #[test]
    fn refuses_missing_files_and_bad_labels() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(&Cifar10 { train: split(10, 0), test: split(2, 0) }, dir.path()).unwrap();
        let mut bytes = std::fs::read(dir.path().join(TEST_FILE)).unwrap();
        bytes[RECORD_BYTES] = 10;
        std::fs::write(dir.path().join(TEST_FILE), &bytes).unwrap();
        let err = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(err.contains("test_batch.bin") && err.contains("record 1") && err.contains("label 10"), "{err}");
        std::fs::remove_file(dir.path().join("data_batch_5.bin")).unwrap();
        let err = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(err.contains("missing data_batch_5.bin"), "{err}");
        assert!(parse_records("x", &[]).is_err());
    }

    #[test]
    fn histogram_counts_labels() {
        assert_eq!(label_histogram(&split(12, 0)), [2, 2, 1, 1, 1, 1, 1, 1, 1, 1]);
    }
}
