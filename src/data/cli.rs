//! `normlab data --source SRC --out DIR`: import CIFAR-10 into the official binary layout;
//! `normlab data --verify DIR`: check an imported folder against its import record.

use super::download::{Md5Check, OFFICIAL_URL};
use super::folder::DEFAULT_SEED;
use super::import::{import, ImportOptions, Outcome};
use super::integrity::{verify, Verified};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Arguments of `normlab data`.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("Official archive: {OFFICIAL_URL} (MD5 {}).", super::download::OFFICIAL_MD5))]
pub struct DataArgs {
    /// CIFAR-10 source: cifar-10-binary.tar.gz or its extracted directory, an image-folder
    /// archive or directory (<split>/<class>/<n>.jpg|png), or an http(s):// or file:// URL.
    #[arg(long, required_unless_present = "verify")]
    pub source: Option<String>,
    /// Output directory for data_batch_1..5.bin, test_batch.bin and batches.meta.txt.
    #[arg(long, required_unless_present = "verify")]
    pub out: Option<PathBuf>,
    /// Check an imported folder instead: every batch file's size and SHA-256 against the
    /// import record `normlab data` wrote there (exits non-zero when a file differs or there
    /// is no record to check against).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["source", "out", "md5"])]
    pub verify: Option<PathBuf>,
    /// Expected MD5 of the source file (32 hex digits), or `skip`. URLs are checked against
    /// the official archive's published MD5 unless this is given; local files only when it is.
    #[arg(long)]
    pub md5: Option<String>,
    /// Seed of the shuffle applied to image-folder sources (train with SEED, test with
    /// SEED ^ 0x74657374); official binary sources keep their order.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
}

/// Runs `normlab data`.
pub fn run(args: DataArgs) -> Result<()> {
    if let Some(dir) = &args.verify {
        return match verify(dir)? {
            Verified::Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                println!("{}: every batch file matches its import record", dir.display());
                Ok(())
            }
            Verified::Unchecked(note) => bail!("--verify: {note}; nothing to verify against"),
        };
    }
    let (Some(source), Some(out)) = (args.source, args.out) else { bail!("give --source and --out (or --verify DIR)") };
    let md5 = args.md5.as_deref().map(Md5Check::parse).transpose()?;
    match import(&ImportOptions { source, out, md5, seed: args.seed })? {
        Outcome::AlreadyComplete(msg) | Outcome::Imported(msg) => print!("{}{}", msg, if msg.ends_with('\n') { "" } else { "\n" }),
    }
    Ok(())
}
