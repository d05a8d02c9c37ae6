//! End-to-end tests of `normlab data`: tiny synthetic sources of every kind (image folders as
//! PNG and JPEG, directory and tar.gz; the official binary layout as archive; URLs through a
//! local HTTP server and file://) are imported and read back with `normlab::data::load_dir`;
//! bad sources are refused with messages; and, when the shared JPEG copy of CIFAR-10 is
//! present, the full import is checked against candle-datasets' reader.

use normlab::data::{binary, load_dir, write_dir, Cifar10, Split, CLASSES, IMAGE_BYTES};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TRAIN_PER_CLASS: u8 = 2;
const TEST_PER_CLASS: u8 = 1;

/// Runs the normlab binary cargo built for these tests (or the one env NORMLAB_BIN names,
/// for target directories shared by several checkouts).
fn normlab(args: &[&str]) -> Output {
    let bin = std::env::var_os("NORMLAB_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_normlab")));
    Command::new(bin).args(args).output().expect("run normlab")
}

fn data(source: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["data", "--source", source, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    normlab(&args)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "normlab failed: {}", text(o));
}

fn assert_refused(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "expected an error, got success: {}", text(o));
    let t = text(o);
    assert!(!t.contains("panicked"), "panicked: {t}");
    for n in needles {
        assert!(t.contains(n), "message lacks '{n}': {t}");
    }
}

/// The pixels of synthetic image (label, index): R = label, G = index, B = 8x + y.
fn pixels(label: u8, index: u8) -> image::RgbImage {
    image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([label * 20, index * 10, (x * 8 + y) as u8]))
}

/// The same image as the binary format's planes R, G, B.
fn planes(img: &image::RgbImage) -> Vec<u8> {
    let mut out = vec![0u8; IMAGE_BYTES];
    for (p, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * 1024 + p] = px.0[c];
        }
    }
    out
}

/// Writes `<root>/<top>/<split>/<class>/<n>.<ext>` and returns the expected (label, planes)
/// per split, the planes decoded back from the written file (exact for PNG; JPEG as the
/// image crate decodes it).
fn image_folder(root: &Path, top: &str, format: image::ImageFormat, ext: &str) -> [Vec<(u8, Vec<u8>)>; 2] {
    let mut expected = [Vec::new(), Vec::new()];
    for (s, (split, per_class)) in [("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)].into_iter().enumerate() {
        for (label, class) in CLASSES.iter().enumerate() {
            let dir = root.join(top).join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let path = dir.join(format!("{i:04}.{ext}"));
                pixels(label as u8, i).save_with_format(&path, format).unwrap();
                let back = image::open(&path).unwrap().to_rgb8();
                expected[s].push((label as u8, planes(&back)));
            }
        }
    }
    expected
}

/// A split's records as a sorted list, to compare contents regardless of the shuffle.
fn sorted_records(split: &Split) -> Vec<(u8, Vec<u8>)> {
    let mut v: Vec<(u8, Vec<u8>)> = (0..split.len()).map(|i| (split.labels[i], split.image(i).to_vec())).collect();
    v.sort();
    v
}

fn tar_gz(dir: &Path, archive: &Path) {
    let file = std::fs::File::create(archive).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if p.is_dir() {
            builder.append_dir_all(&name, &p).unwrap();
        } else {
            builder.append_path_with_name(&p, &name).unwrap();
        }
    }
    builder.into_inner().unwrap().finish().unwrap();
}

fn md5_hex(path: &Path) -> String {
    format!("{:x}", md5::compute(std::fs::read(path).unwrap()))
}

/// The entries of a tiny official-layout archive: 5 training batches and a test batch
/// under cifar-10-batches-bin/, from a synthetic set.
fn official_archive(tmp: &Path) -> (PathBuf, Cifar10) {
    let set = |n: usize, salt: usize| {
        let images = (0..n * IMAGE_BYTES).map(|i| ((i * 13 + salt) % 256) as u8).collect();
        Split::new(images, (0..n).map(|i| ((i * 7 + salt) % 10) as u8).collect()).unwrap()
    };
    let data = Cifar10 { train: set(15, 1), test: set(4, 2) };
    let src = tmp.join("src");
    write_dir(&data, &src.join("cifar-10-batches-bin")).unwrap();
    let archive = tmp.join("cifar-10-binary.tar.gz");
    tar_gz(&src, &archive);
    (archive, data)
}

#[test]
fn png_folder_and_its_archive_import_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = image_folder(&tmp.path().join("folder"), "my-cifar", image::ImageFormat::Png, "png");
    // Directory source (the root above the top folder) and the same as a tar.gz.
    let out_dir = tmp.path().join("from_dir");
    assert_ok(&data(tmp.path().join("folder").to_str().unwrap(), &out_dir, &[]));
    let archive = tmp.path().join("folder.tar.gz");
    tar_gz(&tmp.path().join("folder"), &archive);
    let out_tar = tmp.path().join("out/nested/from_tar");
    let o = data(archive.to_str().unwrap(), &out_tar, &[]);
    assert_ok(&o);
    assert!(text(&o).contains("train images per class: [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]"), "{}", text(&o));
    let a = load_dir(&out_dir).unwrap();
    let b = load_dir(&out_tar).unwrap();
    for (split, exp) in [(&a.train, &expected[0]), (&a.test, &expected[1])] {
        let mut exp = exp.clone();
        exp.sort();
        assert_eq!(sorted_records(split), exp, "labels and pixels preserved exactly");
    }
    // Same seed: byte-identical output whatever the source form.
    assert_eq!((a.train.images, a.train.labels), (b.train.images.clone(), b.train.labels.clone()));
    // Shuffled: the training labels are not in class order.
    let class_order: Vec<u8> = (0..20).map(|i| (i / 2) as u8).collect();
    assert_ne!(b.train.labels, class_order);
    // Another seed gives another order of the same records.
    let out_seed = tmp.path().join("seed7");
    assert_ok(&data(archive.to_str().unwrap(), &out_seed, &["--seed", "7"]));
    let c = load_dir(&out_seed).unwrap();
    assert_ne!(c.train.labels, b.train.labels);
    assert_eq!(sorted_records(&c.train), sorted_records(&b.train));
    // No temporary or lock files left beside the outputs.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn jpeg_folder_decodes_like_the_image_crate_and_second_run_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = image_folder(tmp.path(), "cifar10-jpeg", image::ImageFormat::Jpeg, "jpg");
    let out = tmp.path().join("out");
    let src = tmp.path().join("cifar10-jpeg");
    assert_ok(&data(src.to_str().unwrap(), &out, &[]));
    let got = load_dir(&out).unwrap();
    let mut exp = expected[0].clone();
    exp.sort();
    assert_eq!(sorted_records(&got.train), exp);
    let meta = std::fs::read_to_string(out.join("batches.meta.txt")).unwrap();
    assert_eq!(meta.lines().take(10).collect::<Vec<_>>(), CLASSES);

    let stamp = std::fs::metadata(out.join("data_batch_1.bin")).unwrap().modified().unwrap();
    let o = data(src.to_str().unwrap(), &out, &[]);
    assert_ok(&o);
    assert!(text(&o).contains("nothing to do") && text(&o).contains(&format!("from {}", src.display())), "{}", text(&o));
    assert_eq!(std::fs::metadata(out.join("data_batch_1.bin")).unwrap().modified().unwrap(), stamp);
}

#[test]
fn official_archive_and_directory_keep_record_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, original) = official_archive(tmp.path());
    for (source, name) in [(archive.clone(), "a"), (tmp.path().join("src"), "b"), (tmp.path().join("src/cifar-10-batches-bin"), "c")] {
        let out = tmp.path().join(name);
        let o = data(source.to_str().unwrap(), &out, &[]);
        assert_ok(&o);
        assert!(text(&o).contains("record order kept") && text(&o).contains("reduced set"), "{}", text(&o));
        let got = load_dir(&out).unwrap();
        assert_eq!((got.train.labels, got.train.images), (original.train.labels.clone(), original.train.images.clone()));
        assert_eq!((got.test.labels, got.test.images), (original.test.labels.clone(), original.test.images.clone()));
    }
    // --md5 on a local file: checked when given.
    let o = data(archive.to_str().unwrap(), &tmp.path().join("d"), &["--md5", "00000000000000000000000000000000"]);
    assert_refused(&o, &["MD5 of", "expected 00000000000000000000000000000000"]);
    assert!(!tmp.path().join("d").exists());
    assert_ok(&data(archive.to_str().unwrap(), &tmp.path().join("e"), &["--md5", &md5_hex(&archive)]));
}

#[test]
fn truncated_and_foreign_sources_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, _) = official_archive(tmp.path());
    let batch = tmp.path().join("src/cifar-10-batches-bin/data_batch_1.bin");
    let out = tmp.path().join("out");

    // A truncated data_batch_1.bin given as the source.
    let bytes = std::fs::read(&batch).unwrap();
    let cut = tmp.path().join("data_batch_1.bin");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    assert_refused(&data(cut.to_str().unwrap(), &out, &[]), &["not a CIFAR-10 source", "single batch file", "truncated"]);
    // A directory whose data_batch_1.bin is truncated.
    std::fs::write(&batch, &bytes[..bytes.len() - 1000]).unwrap();
    assert_refused(&data(tmp.path().join("src").to_str().unwrap(), &out, &[]), &["data_batch_1.bin", "not a whole number of 3073-byte records"]);
    // A directory missing a batch file.
    std::fs::remove_file(&batch).unwrap();
    assert_refused(&data(tmp.path().join("src").to_str().unwrap(), &out, &[]), &["missing data_batch_1.bin"]);
    // A truncated archive.
    let gz = std::fs::read(&archive).unwrap();
    let cut_gz = tmp.path().join("cut.tar.gz");
    std::fs::write(&cut_gz, &gz[..gz.len() / 2]).unwrap();
    assert_refused(&data(cut_gz.to_str().unwrap(), &out, &[]), &["cut.tar.gz", "truncated or corrupt"]);
    // A foreign file, a missing path, an unknown class folder.
    let foreign = tmp.path().join("notes.txt");
    std::fs::write(&foreign, "hello").unwrap();
    assert_refused(&data(foreign.to_str().unwrap(), &out, &[]), &["not a CIFAR-10 source", "68 65 6c 6c 6f"]);
    assert_refused(&data(tmp.path().join("nope").to_str().unwrap(), &out, &[]), &["does not exist"]);
    image_folder(&tmp.path().join("imgs"), "top", image::ImageFormat::Png, "png");
    std::fs::rename(tmp.path().join("imgs/top/test/cat"), tmp.path().join("imgs/top/test/kitten")).unwrap();
    assert_refused(&data(tmp.path().join("imgs").to_str().unwrap(), &out, &[]), &["unknown class folder 'kitten'"]);
    // None of these left an output or a temporary directory.
    assert!(!out.exists());
    assert!(!tmp.path().join(".out.partial").exists() && !tmp.path().join(".out.lock").exists());
    // An output that holds something else is never overwritten.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    assert_refused(&data(archive.to_str().unwrap(), &busy, &[]), &["not a complete CIFAR-10 directory", "remove it or choose another --out"]);
    assert_eq!(std::fs::read_to_string(busy.join("keep.txt")).unwrap(), "mine");
}

#[test]
fn leftovers_of_a_killed_import_are_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, original) = official_archive(tmp.path());
    // What a killed import leaves: a half-written temporary directory, and no DIR.
    let partial = tmp.path().join(".out.partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("data_batch_1.bin"), [1, 2, 3]).unwrap();
    // An empty DIR (made by the user beforehand) is filled.
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = data(archive.to_str().unwrap(), &out, &[]);
    assert_ok(&o);
    assert!(text(&o).contains("left by an interrupted import"), "{}", text(&o));
    assert!(!partial.exists());
    assert_eq!(load_dir(&out).unwrap().train.images, original.train.images);
}

/// Serves `body` on 127.0.0.1 for at most `connections` requests; the first response is cut
/// after `cut_first` body bytes when given. Returns the URL and the Range headers seen.
fn serve(body: Vec<u8>, cut_first: Option<usize>, connections: usize) -> (String, std::sync::mpsc::Receiver<Option<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mirror/cifar-10-binary.tar.gz", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (k, stream) in listener.incoming().take(connections).enumerate() {
            let mut stream = stream.unwrap();
            stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut from = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    from = Some(v.trim().trim_end_matches('-').to_string());
                }
            }
            let start: usize = from.as_deref().map_or(0, |f| f.parse().unwrap());
            let _ = tx.send(from);
            let mut head = format!("HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n", if start > 0 { "206 Partial Content" } else { "200 OK" }, body.len() - start);
            if start > 0 {
                head += &format!("Content-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len());
            }
            head += "\r\n";
            let end = if k == 0 { cut_first.unwrap_or(body.len()) } else { body.len() };
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[start..end]);
        }
    });
    (url, rx)
}

#[test]
fn url_sources_download_resume_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, original) = official_archive(tmp.path());
    let body = std::fs::read(&archive).unwrap();
    let md5 = md5_hex(&archive);

    // An interrupted download resumes with a Range request and imports.
    let (url, ranges) = serve(body.clone(), Some(body.len() / 3), 2);
    let out = tmp.path().join("web");
    let o = data(&url, &out, &["--md5", &md5]);
    assert_ok(&o);
    assert_eq!(ranges.try_iter().collect::<Vec<_>>(), vec![None, Some((body.len() / 3).to_string())]);
    assert_eq!(load_dir(&out).unwrap().train.images, original.train.images);
    assert!(!tmp.path().join(".web.cifar-10-binary.tar.gz").exists(), "download removed after import");

    // Without --md5 a URL is checked against the official archive's MD5: this is not it.
    let (url, _) = serve(body.clone(), None, 1);
    assert_refused(&data(&url, &tmp.path().join("web2"), &[]), &["published MD5 of cifar-10-binary.tar.gz", "--md5"]);
    assert!(!tmp.path().join("web2").exists());

    // file:// URLs, checked or not.
    let file_url = format!("file://{}", archive.display());
    assert_refused(&data(&file_url, &tmp.path().join("f1"), &[]), &["published MD5"]);
    assert_ok(&data(&file_url, &tmp.path().join("f2"), &["--md5", "skip"]));
    assert_eq!(load_dir(&tmp.path().join("f2")).unwrap().test.labels, original.test.labels);
    assert_refused(&data(&file_url, &tmp.path().join("f3"), &["--md5", "xyz"]), &["--md5 'xyz'"]);
}

/// Where the shared JPEG copy of CIFAR-10 is, if present.
fn shared_archive() -> Option<PathBuf> {
    let path = std::env::var_os("NORMLAB_CIFAR_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10-jpeg.tar.gz"));
    path.is_file().then_some(path)
}

#[test]
fn full_jpeg_archive_imports_and_candle_reads_it() {
    let Some(archive) = shared_archive() else {
        println!("SKIPPED full_jpeg_archive_imports_and_candle_reads_it: no cifar10-jpeg.tar.gz (set NORMLAB_CIFAR_ARCHIVE or put it at ../shared/data/)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cifar10");
    assert_ok(&data(archive.to_str().unwrap(), &out, &[]));
    let ours = load_dir(&out).unwrap();
    assert_eq!((ours.train.len(), ours.test.len()), (50_000, 10_000));
    assert_eq!(binary::label_histogram(&ours.train), [5_000; 10]);
    assert_eq!(binary::label_histogram(&ours.test), [1_000; 10]);
    // Shuffled: no class run longer than a few dozen images in any prefix.
    let longest_run = ours.train.labels.chunk_by(|a, b| a == b).map(|r| r.len()).max().unwrap();
    assert!(longest_run < 20, "longest run of one class: {longest_run}");
    let first_1000: BTreeMap<u8, usize> = ours.train.labels[..1000].iter().fold(BTreeMap::new(), |mut m, &l| {
        *m.entry(l).or_default() += 1;
        m
    });
    assert!(first_1000.values().all(|&c| (60..=140).contains(&c)), "prefix histogram {first_1000:?}");

    let theirs = candle_datasets::vision::cifar::load_dir(&out).unwrap();
    assert_eq!(theirs.train_images.dims(), &[50_000, 3, 32, 32]);
    let check = |images: &candle_core::Tensor, labels: &candle_core::Tensor, split: &Split| {
        assert_eq!(labels.to_vec1::<u8>().unwrap(), split.labels);
        let got = images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), split.images.len());
        // candle scales by 1/255 (a multiplication): equal to the byte / 255 up to one ulp.
        assert!(got.iter().zip(&split.images).all(|(&g, &b)| (g - b as f32 / 255.0).abs() <= 1e-6), "candle reads other pixel values");
    };
    check(&theirs.train_images, &theirs.train_labels, &ours.train);
    check(&theirs.test_images, &theirs.test_labels, &ours.test);
}
