//! Parsing the `--device` setting (`cpu`, `cuda`, `cuda:N`) into a candle device.
//!
//! Every command that computes takes the same setting, so the parsing and the error a user sees
//! when the binary lacks the `cuda` feature live in one place.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::sync::atomic::{AtomicBool, Ordering};

/// A device as named on the command line or in a plan, before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeviceSpec {
    /// The host CPU (candle's multi-threaded CPU backend).
    Cpu,
    /// The CUDA GPU with this ordinal.
    Cuda(usize),
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase();
        if t == "cpu" {
            return Ok(Self::Cpu);
        }
        if t == "cuda" || t == "gpu" {
            return Ok(Self::Cuda(0));
        }
        if let Some(n) = t.strip_prefix("cuda:") {
            let ordinal = n
                .parse::<usize>()
                .with_context(|| format!("device '{text}': the ordinal after 'cuda:' must be a number, e.g. cuda:0"))?;
            return Ok(Self::Cuda(ordinal));
        }
        bail!("unknown device '{text}': expected 'cpu' or 'cuda:N' (e.g. cuda:0)")
    }

    /// Opens the device. A CUDA device on a build without the `cuda` feature is an error that
    /// names the feature, never a silent fall-back to the CPU.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => open_cuda(ordinal),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    candle_core::cuda::set_gemm_reduced_precision_f32(tf32());
    let device = Device::new_cuda(ordinal).with_context(|| {
        format!("cannot open cuda:{ordinal}: no usable NVIDIA GPU or driver on this machine (or no GPU {ordinal}); run on the CPU (cpu) instead")
    })?;
    if let Device::Cuda(d) = &device {
        // Every tensor of this device lives on its one stream (candle's per-thread stream; each
        // training thread opens its own device), so cudarc's per-allocation events, made to
        // order uses across streams, are never waited on: two event creations per allocation
        // and two destructions per free for nothing (docs/gpu-step.md §1).
        // SAFETY: no tensor of this device is used from another stream.
        unsafe { d.disable_event_tracking() };
        keep_freed_memory(d)?;
    }
    Ok(device)
}

/// Sets the device's default memory pool to keep freed memory (release threshold: unlimited):
/// with the driver's default of 0, memory freed during a step may be handed back to the OS at
/// each synchronization and mapped again by the next step's allocations. Keeps this process's
/// peak reserved (shared with other processes on the card only after it exits).
#[cfg(feature = "cuda")]
fn keep_freed_memory(d: &candle_core::CudaDevice) -> Result<()> {
    use candle_core::cuda::cudarc::driver::sys;
    let cu_device = d.cuda_stream().context().cu_device();
    let mut pool = std::ptr::null_mut();
    // SAFETY: plain driver calls on a valid device, with out-pointers to live locals.
    let status = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, cu_device) };
    if status != sys::CUresult::CUDA_SUCCESS {
        bail!("cannot get the CUDA device's memory pool: {status:?}");
    }
    let mut threshold = u64::MAX;
    let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
    let status = unsafe { sys::cuMemPoolSetAttribute(pool, attr, &mut threshold as *mut u64 as *mut std::ffi::c_void) };
    if status != sys::CUresult::CUDA_SUCCESS {
        bail!("cannot set the CUDA memory pool's release threshold: {status:?}");
    }
    Ok(())
}

/// The free memory of a CUDA device in bytes, as its driver counts it (what `normlab run
/// --stack auto` sizes stacks from).
#[cfg(feature = "cuda")]
pub fn free_memory(device: &Device) -> Result<u64> {
    match device {
        Device::Cuda(d) => {
            let (free, _total) = d.cuda_stream().context().mem_get_info().map_err(|e| anyhow::anyhow!("cannot read the GPU's free memory: {e:?}"))?;
            Ok(free as u64)
        }
        other => bail!("free device memory asked of {other:?}, which is not a CUDA device"),
    }
}

/// The free memory of a CUDA device: an error on a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub fn free_memory(device: &Device) -> Result<u64> {
    bail!("free memory of {device:?} asked for, but this normlab was built without the `cuda` feature")
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    bail!(
        "cuda:{ordinal} asked for, but this normlab was built without the `cuda` feature: \
         build it with `make cuda` (cargo build --release --features cuda,cudnn), or run on the CPU (cpu)"
    )
}

/// Whether CUDA matrix products and convolutions may use TF32 tensor cores (see [`set_tf32`]).
static TF32: AtomicBool = AtomicBool::new(true);

/// Allows (or forbids) TF32 tensor cores in f32 convolutions (normlab's cuDNN ops) and matrix
/// products (cuBLAS) on CUDA. Allowed by default, as PyTorch's cuDNN convolutions are
/// (`torch.backends.cudnn.allow_tf32`); forbidden, every product is exact f32, which
/// `normlab selftest` uses to hold CUDA to the CPU's results. No effect on the CPU.
pub fn set_tf32(allow: bool) {
    TF32.store(allow, Ordering::Relaxed);
    #[cfg(feature = "cuda")]
    {
        candle_core::cuda::set_gemm_reduced_precision_f32(allow);
        if !allow {
            // candle's own cuDNN convolutions (the `portable` and `stock` kernels) run with
            // cuDNN's default math, which allows TF32 on Ampere and later and has no switch in
            // candle; NVIDIA's override, read when cuDNN initialises (candle does that at the
            // first convolution, after this), forbids it. On an H200 (2026-11-26) the portable
            // selftest failed with TF32 (resnet18 weight gradients 8.6e-2 off) and passed with
            // the variable set before the process started (3.2e-3); setting it here, in the
            // process, has not yet run on a GPU.
            // SAFETY: called from the command's set-up, before threads that read it exist.
            unsafe { std::env::set_var("NVIDIA_TF32_OVERRIDE", "0") };
        }
    }
}

/// Whether TF32 is allowed on CUDA (see [`set_tf32`]).
pub fn tf32() -> bool {
    TF32.load(Ordering::Relaxed)
}

/// Parses and opens a device in one step (what most commands need).
pub fn open(text: &str) -> Result<Device> {
    DeviceSpec::parse(text)?.open()
}

/// A short human name of an opened device, for logs and result rows.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        _ => format!("{device:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse("cuda:1").unwrap(), DeviceSpec::Cuda(1));
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert!(DeviceSpec::parse("tpu").is_err());
        assert!(DeviceSpec::parse("cuda:x").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_names_the_feature() {
        let err = DeviceSpec::parse("cuda:0").unwrap().open().unwrap_err().to_string();
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}
