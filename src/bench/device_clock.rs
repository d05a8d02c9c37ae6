//! Device time of a training step: CUDA events recorded on candle's stream at the step's start
//! and end, read after the steps (reading them waits, so nothing is read while timing).
//!
//! An event pair measures the device's timeline between the step's first and last command,
//! idle gaps included: when the host issues work more slowly than the device runs it, device
//! time follows host time. On the CPU there is no device clock: ops run on the host threads
//! as they are issued, so host time is the step ([`DeviceClock::new`] gives `None`).

use anyhow::Result;
use candle_core::Device;

/// Start/end events of each timed step on one CUDA device.
pub struct DeviceClock {
    #[cfg(feature = "cuda")]
    stream: std::sync::Arc<candle_core::cuda::cudarc::driver::CudaStream>,
    #[cfg(feature = "cuda")]
    events: Vec<(candle_core::cuda::cudarc::driver::CudaEvent, candle_core::cuda::cudarc::driver::CudaEvent)>,
    #[cfg(feature = "cuda")]
    open: Option<candle_core::cuda::cudarc::driver::CudaEvent>,
}

impl DeviceClock {
    /// A clock for `device`; `None` on the CPU (no device clock).
    pub fn new(device: &Device) -> Result<Option<Self>> {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => Ok(Some(Self { stream: d.cuda_stream(), events: Vec::new(), open: None })),
            _ => Ok(None),
        }
    }

    /// Records a step's start on the device's stream.
    pub fn start(&mut self) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            self.open = Some(self.stream.record_event(Some(timing()))?);
        }
        Ok(())
    }

    /// Records the end of the step [`Self::start`] opened.
    pub fn stop(&mut self) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            let Some(start) = self.open.take() else { anyhow::bail!("device clock: stop without start") };
            let end = self.stream.record_event(Some(timing()))?;
            self.events.push((start, end));
        }
        Ok(())
    }

    /// The summed device time of the recorded steps, in seconds (waits for the last event).
    pub fn total_seconds(&self) -> Result<f64> {
        #[cfg(feature = "cuda")]
        {
            let mut ms = 0f64;
            for (a, b) in &self.events {
                ms += a.elapsed_ms(b)? as f64;
            }
            return Ok(ms / 1e3);
        }
        #[allow(unreachable_code)]
        Ok(0.0)
    }
}

/// Events that record time (cudarc's default disables timing).
#[cfg(feature = "cuda")]
fn timing() -> candle_core::cuda::cudarc::driver::sys::CUevent_flags {
    candle_core::cuda::cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT
}
