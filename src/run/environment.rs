//! The environment a run needs, apart from its cells: devices the binary can use, data that
//! is what its import wrote, a results folder it can write. [`check_devices`] and
//! [`check_results_folder`] run before the first cell (the data checks live with the data:
//! [`crate::data::integrity`]); what can only fail mid-run — a disk that fills up, a folder
//! that turns read-only — is recognised in a cell's error by [`problem`], and stops the run
//! instead of becoming the cell's `failed` row: it is no property of the cell, and a rerun
//! after the fix must run the cell again.

use crate::device::DeviceSpec;
use anyhow::Result;
use std::io::{ErrorKind, Write};
use std::path::Path;

/// Opens each device once, so a device the binary cannot use (a CUDA device on a CPU build,
/// a GPU that is not there) stops the run before any cell; `flag` names the option that
/// gave them.
pub fn check_devices(devices: &[DeviceSpec], flag: &str) -> Result<()> {
    let mut seen = Vec::new();
    for &d in devices {
        if !seen.contains(&d) {
            seen.push(d);
            d.open().map_err(|e| anyhow::anyhow!("{flag} {d}: {}", crate::util::error_text(&e)))?;
        }
    }
    Ok(())
}

/// Creates the results folder if needed and writes, flushes and removes a small file in it,
/// so a folder that cannot be written (read-only, full, not a folder) stops the run before
/// any cell, naming the folder and the OS error; `flag` names the option that gave it.
pub fn check_results_folder(dir: &Path, flag: &str) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| anyhow::anyhow!("{flag} {}: {what}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the results folder", e))?;
    let probe = dir.join(format!(".normlab-write-check.{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&[0u8; 4096])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| fail("cannot write in the results folder", e))?;
    Ok(())
}

/// When `e` (a cell's error) comes from the environment rather than the cell — no space
/// left, a disk quota, a read-only filesystem, permission denied — the OS error, found
/// anywhere in its chain (candle's safetensors errors included).
pub fn problem(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return environmental(io);
        }
        cause.downcast_ref::<candle_core::Error>().and_then(candle_io)
    })
}

fn environmental(io: &std::io::Error) -> Option<String> {
    const ENOSPC: i32 = 28;
    const EROFS: i32 = 30;
    const EDQUOT: i32 = 122;
    let by_code = io.raw_os_error().is_some_and(|c| [ENOSPC, EROFS, EDQUOT].contains(&c));
    let by_kind = matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::ReadOnlyFilesystem | ErrorKind::QuotaExceeded | ErrorKind::PermissionDenied);
    (by_code || by_kind).then(|| io.to_string())
}

/// The I/O error inside a candle error (its own, or the safetensors crate's, which does not
/// expose it as a source).
fn candle_io(e: &candle_core::Error) -> Option<String> {
    match e {
        candle_core::Error::Io(io) => environmental(io),
        candle_core::Error::SafeTensor(safetensors::SafeTensorError::IoError(io)) => environmental(io),
        candle_core::Error::WithBacktrace { inner, .. } | candle_core::Error::Context { inner, .. } => candle_io(inner),
        candle_core::Error::WithPath { inner, .. } => candle_io(inner),
        _ => None,
    }
}

/// The message that stops a run on an environment problem met by `cell`.
pub fn stop_message(cell: &str, e: &anyhow::Error) -> String {
    format!(
        "stopped: {}\nThis is the machine, not the cell ({cell}): no row was written for it. Fix it (free space, \
         a writable folder), then run the same command again: finished rows are kept and the cell resumes from its last checkpoint.",
        crate::util::error_text(e)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_full_disk_is_the_environment_and_a_missing_file_is_not() {
        let full = std::fs::write("/dev/full", b"x").map_err(|e| anyhow::Error::new(e).context("cannot write r/cells/x/metrics.csv"));
        if let Err(e) = full {
            let p = problem(&e).expect("ENOSPC is an environment problem");
            assert!(p.contains("os error 28"), "{p}");
            let m = stop_message("cell abc", &e);
            assert_eq!(m.matches("os error 28").count(), 1, "the OS error once: {m}");
            assert!(m.contains("r/cells/x/metrics.csv"), "{m}");
        }
        let missing = std::fs::read("/nonexistent/file").context("cannot read /nonexistent/file").unwrap_err();
        assert_eq!(problem(&missing), None);
        let st = candle_core::Error::SafeTensor(safetensors::SafeTensorError::IoError(std::io::Error::from_raw_os_error(28)));
        assert!(problem(&anyhow::Error::new(st).context("cannot write model.safetensors")).is_some());
    }

    #[test]
    fn a_results_folder_that_is_a_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("results");
        std::fs::write(&f, b"").unwrap();
        let err = format!("{:#}", check_results_folder(&f, "--results").unwrap_err());
        assert!(err.contains("--results") && err.contains(&f.display().to_string()), "{err}");
        check_results_folder(&dir.path().join("new"), "--results").unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("new")).unwrap().count(), 0, "the probe is removed");
    }
}
