//! Fetching a CIFAR-10 source named by URL: `http(s)://` downloads with a progress bar into a
//! partial file that survives interruptions (the next attempt, or the next run, resumes it
//! with an HTTP Range request, or restarts cleanly when the server cannot resume), and
//! `file://` names a local file. Either is checked against an MD5: by default the published
//! one of the official cifar-10-binary.tar.gz, or `--md5 HEX`, or none with `--md5 skip`.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The published MD5 of cifar-10-binary.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html).
pub const OFFICIAL_MD5: &str = "c58f30108f718f92721af3b95e74349a";
/// Where the official binary archive is published.
pub const OFFICIAL_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Download attempts (each resuming the previous one) before giving up.
const ATTEMPTS: u32 = 5;

/// The MD5 check a source must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Md5Check {
    /// The file's MD5 must equal these 32 lowercase hex digits.
    Expect(String),
    /// No check.
    Skip,
}

impl Md5Check {
    /// Parses the `--md5` value: 32 hex digits, or `skip`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase();
        if t == "skip" {
            return Ok(Md5Check::Skip);
        }
        if t.len() != 32 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("--md5 '{text}' is neither 32 hex digits nor 'skip'");
        }
        Ok(Md5Check::Expect(t))
    }

    /// The check for a URL source: `given`, else the official archive's published MD5.
    pub fn for_url(given: Option<&Md5Check>) -> Md5Check {
        given.cloned().unwrap_or_else(|| Md5Check::Expect(OFFICIAL_MD5.to_string()))
    }
}

/// Whether `source` is a URL (http, https or file scheme) rather than a path.
pub fn is_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    ["http://", "https://", "file://"].iter().any(|s| lower.starts_with(s))
}

/// The local path of a `file://` URL (`file:///abs/path` or `file://localhost/abs/path`),
/// or `None` for other schemes. Percent-escapes are decoded.
pub fn file_url_path(url: &str) -> Result<Option<PathBuf>> {
    if !url.to_ascii_lowercase().starts_with("file://") {
        return Ok(None);
    }
    let rest = &url["file://".len()..];
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        bail!("{url}: a file URL needs an absolute path, e.g. file:///data/cifar-10-binary.tar.gz");
    }
    Ok(Some(PathBuf::from(percent_decode(rest)?)))
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| anyhow!("bad percent-escape in '{s}'"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| anyhow!("bad percent-escape %{hex} in '{s}'"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("'{s}' does not decode to UTF-8"))
}

/// The file name a URL's last path segment gives (`download` when it has none).
pub fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    let name = after_host.rsplit('/').next().unwrap_or("");
    let clean: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
    if clean.is_empty() || clean.starts_with('.') {
        "download".to_string()
    } else {
        clean
    }
}

/// The MD5 of a file as 32 lowercase hex digits.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut ctx = md5::Context::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.consume(&buf[..n]);
    }
    Ok(format!("{:x}", ctx.compute()))
}

/// Checks `path` against `check`; the error names the file, both digests and the way out.
pub fn verify_md5(path: &Path, check: &Md5Check) -> Result<()> {
    let Md5Check::Expect(expected) = check else { return Ok(()) };
    let found = md5_file(path)?;
    if &found != expected {
        let which = if expected == OFFICIAL_MD5 { " (the published MD5 of cifar-10-binary.tar.gz)" } else { "" };
        bail!(
            "MD5 of {} is {found}, expected {expected}{which}: the file is corrupt or a different file; \
             for another file pass --md5 <its md5> or --md5 skip",
            path.display()
        );
    }
    Ok(())
}

/// Downloads `url` to `dest`: bytes go to `dest` + `.part`, which is resumed (HTTP Range)
/// if it exists, or restarted from zero when the server ignores or refuses the range; only a
/// complete download is renamed to `dest`. Interrupted transfers are retried up to five
/// times; after that the partial file stays for the next run to resume.
pub fn fetch(url: &str, dest: &Path) -> Result<()> {
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(30)).timeout_read(Duration::from_secs(60)).build();
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut request = agent.get(url);
        if have > 0 {
            eprintln!("resuming {url} at byte {have} (partial file {})", part.display());
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, _)) if have > 0 => {
                eprintln!("server refused to resume at byte {have}: restarting the download");
                std::fs::remove_file(&part).with_context(|| format!("cannot remove {}", part.display()))?;
                continue;
            }
            Err(ureq::Error::Status(code, r)) => bail!("{url}: the server answered {code} {}", r.status_text()),
            Err(e) => {
                last_error = e.to_string();
                eprintln!("attempt {attempt}/{ATTEMPTS} to fetch {url} failed: {e}");
                std::thread::sleep(Duration::from_millis(500 * attempt as u64));
                continue;
            }
        };
        let resumed = response.status() == 206 && response.header("Content-Range").is_some_and(|r| r.starts_with(&format!("bytes {have}-")));
        let start = if resumed {
            have
        } else if response.status() == 200 || response.status() == 206 {
            if have > 0 {
                eprintln!("server did not resume at byte {have}: restarting the download");
            }
            0
        } else {
            bail!("{url}: unexpected HTTP status {} {}", response.status(), response.status_text());
        };
        if response.status() == 206 && !resumed {
            // A range we did not ask for: ask again for the whole file.
            std::fs::remove_file(&part).with_context(|| format!("cannot remove {}", part.display()))?;
            continue;
        }
        let total = response.header("Content-Length").and_then(|l| l.parse::<u64>().ok()).map(|l| start + l);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(start > 0)
            .truncate(start == 0)
            .open(&part)
            .with_context(|| format!("cannot write {}", part.display()))?;
        let bar = super::progress::bytes_bar(total, "downloading");
        bar.set_position(start);
        let mut reader = response.into_reader();
        let mut written = start;
        let mut buf = vec![0u8; 1 << 16];
        let outcome: std::io::Result<()> = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    file.write_all(&buf[..n]).with_context(|| format!("cannot write {}", part.display()))?;
                    written += n as u64;
                    bar.set_position(written);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        bar.finish_and_clear();
        file.flush().with_context(|| format!("cannot write {}", part.display()))?;
        drop(file);
        match (outcome, total) {
            (Err(e), _) => last_error = format!("transfer interrupted at byte {written}: {e}"),
            (Ok(()), Some(t)) if written != t => last_error = format!("transfer ended at byte {written} of {t}"),
            (Ok(()), _) => {
                std::fs::rename(&part, dest).with_context(|| format!("cannot rename {} to {}", part.display(), dest.display()))?;
                return Ok(());
            }
        }
        eprintln!("attempt {attempt}/{ATTEMPTS}: {last_error}; resuming");
    }
    let kept = match std::fs::metadata(&part) {
        Ok(m) if m.len() > 0 => format!("; the partial file {} ({} bytes) is kept: run the same command again to resume", part.display(), m.len()),
        _ => String::new(),
    };
    bail!("download of {url} failed after {ATTEMPTS} attempts ({last_error}){kept}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// How the test server answers.
    #[derive(Clone, Copy)]
    enum Mode {
        /// Honors Range; the first response stops after this many body bytes.
        CutFirstAt(usize),
        /// Ignores Range, always sends the whole body with 200.
        IgnoreRange,
    }

    /// Serves `body` for `connections` requests on 127.0.0.1, recording the Range headers.
    fn serve(body: Vec<u8>, mode: Mode, connections: usize) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/files/cifar-10-binary.tar.gz", listener.local_addr().unwrap());
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let seen = ranges.clone();
        std::thread::spawn(move || {
            for (k, stream) in listener.incoming().take(connections).enumerate() {
                let mut stream = stream.unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = Some(v.trim().trim_end_matches('-').to_string());
                    }
                }
                seen.lock().unwrap().push(range.clone());
                let from: usize = range.as_deref().map_or(0, |r| r.parse().unwrap());
                let (status, from) = match mode {
                    Mode::IgnoreRange => ("200 OK", 0),
                    _ if from > 0 => ("206 Partial Content", from),
                    _ => ("200 OK", 0),
                };
                let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len() - from);
                if from > 0 {
                    head += &format!("Content-Range: bytes {from}-{}/{}\r\n", body.len() - 1, body.len());
                }
                head += "\r\n";
                let end = match mode {
                    Mode::CutFirstAt(cut) if k == 0 => cut,
                    _ => body.len(),
                };
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[from..end]);
            }
        });
        (url, ranges)
    }

    fn body() -> Vec<u8> {
        (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn resumes_an_interrupted_download() {
        let dir = tempfile::tempdir().unwrap();
        let (url, ranges) = serve(body(), Mode::CutFirstAt(70_000), 2);
        let dest = dir.path().join(url_file_name(&url));
        fetch(&url, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body());
        assert_eq!(*ranges.lock().unwrap(), vec![None, Some("70000".to_string())]);
        assert!(!dir.path().join("cifar-10-binary.tar.gz.part").exists());
    }

    #[test]
    fn restarts_when_the_server_ignores_range() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.tar.gz");
        std::fs::write(dir.path().join("x.tar.gz.part"), vec![9u8; 5000]).unwrap();
        let (url, ranges) = serve(body(), Mode::IgnoreRange, 1);
        fetch(&url, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body());
        assert_eq!(*ranges.lock().unwrap(), vec![Some("5000".to_string())]);
    }

    #[test]
    fn checks_md5() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        verify_md5(&path, &Md5Check::parse("900150983CD24FB0D6963F7D28E17F72").unwrap()).unwrap();
        let err = verify_md5(&path, &Md5Check::for_url(None)).unwrap_err().to_string();
        assert!(err.contains("published MD5") && err.contains("900150983cd24fb0d6963f7d28e17f72"), "{err}");
        verify_md5(&path, &Md5Check::for_url(Some(&Md5Check::Skip))).unwrap();
        assert!(Md5Check::parse("abc").is_err());
    }

    #[test]
    fn parses_urls() {
        assert_eq!(file_url_path("file:///a/b%20c.tar.gz").unwrap(), Some(PathBuf::from("/a/b c.tar.gz")));
        assert_eq!(file_url_path("file://localhost/x").unwrap(), Some(PathBuf::from("/x")));
        assert!(file_url_path("file://rel").is_err());
        assert_eq!(file_url_path("http://h/x").unwrap(), None);
        assert_eq!(url_file_name("https://h:80/~kriz/cifar-10-binary.tar.gz?x=1"), "cifar-10-binary.tar.gz");
        assert_eq!(url_file_name("http://h/"), "download");
        assert!(is_url("HTTPS://x") && !is_url("/tmp/x"));
    }
}
