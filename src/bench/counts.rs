//! What a training step asks of its device, per step: candle's per-thread counters
//! (`candle_core::counters`, a patch of the vendored candle-core) read before and after the
//! timed steps, and the rows `bench train` prints and records.
//!
//! On CUDA the counts are exact, taken where candle (and normlab's custom ops) launch a kernel,
//! allocate, copy or wait. On the CPU there are no launches or device copies: a "launch" is a
//! candle op executed (what becomes one or more kernels on a GPU), an "allocation" a new tensor
//! storage, a "copy" a tensor created from host data or read back to the host (each a copy on
//! a GPU), and a "synchronization" a `Device::synchronize` call or a read-back (each a wait on
//! a GPU).

use candle_core::counters::Counts;
use candle_core::Device;
use serde::Serialize;

/// Counts per training step (totals over the timed steps divided by their number).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepCounts {
    /// Kernel launches (CUDA: candle's and normlab's kernels, cuBLAS and cuDNN calls and
    /// memsets, one each; CPU: candle ops executed).
    pub launches: f64,
    /// Device allocations (CPU: new tensor storages).
    pub allocations: f64,
    /// Host↔device copies (CUDA: kernel layout uploads included; CPU: tensors created from or
    /// read back to host data).
    pub copies: f64,
    /// Times the host waited for the device (CUDA: stream synchronizations and blocking
    /// device→host copies; CPU: `synchronize` calls and read-backs).
    pub syncs: f64,
    /// cuDNN calls (0 on the CPU).
    pub cudnn: f64,
    /// cuBLAS calls (0 on the CPU).
    pub cublas: f64,
    /// candle ops executed (every device).
    pub ops: f64,
    /// Milliseconds the host spent waiting for the device (CUDA), per step.
    pub wait_ms: f64,
}

impl StepCounts {
    /// The per-step counts of `total` (the counters' difference over `steps` steps on `device`).
    pub fn of(total: &Counts, steps: usize, device: &Device) -> Self {
        let per = |v: u64| v as f64 / steps.max(1) as f64;
        let t = total;
        if device.is_cpu() {
            Self {
                launches: per(t.ops),
                allocations: per(t.storages),
                copies: per(t.uploads + t.readbacks),
                syncs: per(t.syncs + t.readbacks),
                cudnn: per(t.cudnn),
                cublas: per(t.blas),
                ops: per(t.ops),
                wait_ms: per(t.wait_ns) / 1e6,
            }
        } else {
            Self {
                launches: per(t.launches + t.blas + t.cudnn + t.memsets),
                allocations: per(t.allocs),
                copies: per(t.htod + t.dtoh),
                syncs: per(t.waits),
                cudnn: per(t.cudnn),
                cublas: per(t.blas),
                ops: per(t.ops),
                wait_ms: per(t.wait_ns) / 1e6,
            }
        }
    }

    /// The rows `bench train` prints, with what each means on `device`.
    pub fn lines(&self, total: &Counts, steps: usize, device: &Device) -> Vec<String> {
        let per = |v: u64| v as f64 / steps.max(1) as f64;
        let row = |name: &str, v: f64, note: String| format!("  {name:<22}{v:10.1}{}", if note.is_empty() { note } else { format!("  ({note})") });
        if device.is_cpu() {
            vec![
                "per step (counted; CPU: no kernels, device memory or copies — what each becomes on a GPU):".to_string(),
                row("kernel launches", self.launches, "candle ops executed".into()),
                row("device allocations", self.allocations, "new tensor storages".into()),
                row("host<->device copies", self.copies, format!("{:.1} created from host data, {:.1} read back", per(total.uploads), per(total.readbacks))),
                row("synchronizations", self.syncs, format!("{:.1} synchronize calls + read-backs", per(total.syncs))),
                row("cuDNN calls", self.cudnn, String::new()),
            ]
        } else {
            vec![
                "per step (counted in the CUDA backend):".to_string(),
                row("kernel launches", self.launches, format!("{:.1} kernels, {:.1} cuBLAS, {:.1} cuDNN, {:.1} memsets; {:.1} candle ops", per(total.launches), per(total.blas), per(total.cudnn), per(total.memsets), per(total.ops))),
                row("device allocations", self.allocations, String::new()),
                row("host<->device copies", self.copies, format!("{:.1} host->device (layouts included), {:.1} device->host; {:.1} device->device", per(total.htod), per(total.dtoh), per(total.dtod))),
                row("synchronizations", self.syncs, format!("host waits, {:.2} ms in them", self.wait_ms)),
                row("cuDNN calls", self.cudnn, String::new()),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    /// A known sequence of candle ops on the CPU, counted exactly.
    #[test]
    fn a_known_op_sequence_gives_exact_counts() {
        let dev = Device::Cpu;
        let before = Counts::now();
        let a = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev).unwrap(); // 1 storage, 1 upload
        let b = (&a + &a).unwrap(); // 1 op, 1 storage
        let c = b.sqr().unwrap().affine(2.0, 1.0).unwrap(); // 2 ops, 2 storages
        let m = c.reshape((2, 2)).unwrap().t().unwrap(); // views: nothing
        let d = m.contiguous().unwrap(); // 1 storage (alloc) + 1 op (strided copy)
        let s = d.sum_all().unwrap(); // 1 op (reduce), 1 storage
        let v = s.to_scalar::<f32>().unwrap(); // 1 read-back
        let diff = Counts::now().since(&before);
        assert_eq!(v, 2.0 * (4.0 + 16.0 + 36.0 + 64.0) + 4.0);
        assert_eq!((diff.ops, diff.storages, diff.uploads, diff.readbacks, diff.syncs), (5, 6, 1, 1, 0), "{diff:?}");
        // Nothing CUDA-side on the CPU.
        assert_eq!((diff.launches, diff.allocs, diff.htod, diff.dtoh, diff.waits, diff.cudnn), (0, 0, 0, 0, 0, 0));
        let per = StepCounts::of(&diff, 1, &dev);
        assert_eq!((per.launches, per.allocations, per.copies, per.syncs), (5.0, 6.0, 2.0, 1.0));
        dev.synchronize().unwrap();
        assert_eq!(Counts::now().since(&before).syncs, 1);
    }

    /// Counts are per thread: another thread's ops do not show in this thread's difference.
    #[test]
    fn counts_are_per_thread() {
        let before = Counts::now();
        std::thread::spawn(|| {
            let a = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
            (&a * &a).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(Counts::now().since(&before), Counts::default());
    }
}
