//! Per-thread event counters (a normlab patch, see vendor/README.md): what the calling thread
//! asked of its device, counted where candle dispatches the work, so a training step's host
//! work can be measured on every device and its reduction tested on the CPU.
//!
//! Counted on every device, at candle's device-generic dispatch (`Storage`, `Device`, `Tensor`):
//! - `ops`: storage operations executed (each a kernel, or more, on a GPU; on the CPU each is
//!   a pass of candle's CPU backend or a custom op's `cpu_fwd`);
//! - `storages`: new tensor storages (op outputs and tensor creations);
//! - `uploads`: tensors created from host data (a host→device copy on a GPU);
//! - `readbacks`: tensor values read to the host (`to_vec*`, `to_scalar`, `to_device(Cpu)`:
//!   a device→host copy and a wait on a GPU);
//! - `syncs`: `Device::synchronize` calls.
//!
//! Counted in the CUDA backend only (exact: at the one place each thing happens):
//! - `launches`: kernel launches through `CudaFunc::builder` (candle's kernels and custom ops
//!   that use it) and those custom code reports with [`record`];
//! - `blas`, `cudnn`: cuBLAS and cuDNN calls (custom code reports its own with [`record`]);
//! - `allocs`, `memsets`: device allocations (`CudaDevice::alloc`, `alloc_zeros`, `clone_htod`,
//!   clones) and the zero fills of `alloc_zeros`;
//! - `htod`, `dtoh`, `dtod`: copies (kernel layout parameters included in `htod`);
//! - `waits`, `wait_ns`: host waits for the device (stream synchronizations and blocking
//!   device→host copies) and the time spent in them.
//!
//! Thread-local `Cell`s: an increment is a load and a store on the calling thread, with no
//! contention and no atomic; the counts are what the calling thread issued (candle dispatches
//! every op on the thread that called it, so a training loop's counts are all on its thread).

use std::cell::Cell;

/// One counter (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Ops,
    Storages,
    Uploads,
    Readbacks,
    Syncs,
    Launches,
    Blas,
    Cudnn,
    Allocs,
    Memsets,
    Htod,
    Dtoh,
    Dtod,
    Waits,
    WaitNs,
}

const N: usize = 15;

thread_local! {
    static COUNTS: [Cell<u64>; N] = const { [const { Cell::new(0) }; N] };
}

/// Adds `n` to `counter` on this thread.
#[inline]
pub fn record(counter: Counter, n: u64) {
    COUNTS.with(|c| {
        let cell = &c[counter as usize];
        cell.set(cell.get().wrapping_add(n));
    });
}

/// Adds one to `counter` on this thread.
#[inline]
pub(crate) fn bump(counter: Counter) {
    record(counter, 1)
}

/// Runs `f`, a host wait for the device, counting it and its duration.
#[inline]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn wait<T>(f: impl FnOnce() -> T) -> T {
    let t = std::time::Instant::now();
    let out = f();
    bump(Counter::Waits);
    record(Counter::WaitNs, t.elapsed().as_nanos() as u64);
    out
}

/// A snapshot of this thread's counters; the difference of two ([`Counts::since`]) is what
/// happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ops: u64,
    pub storages: u64,
    pub uploads: u64,
    pub readbacks: u64,
    pub syncs: u64,
    pub launches: u64,
    pub blas: u64,
    pub cudnn: u64,
    pub allocs: u64,
    pub memsets: u64,
    pub htod: u64,
    pub dtoh: u64,
    pub dtod: u64,
    pub waits: u64,
    pub wait_ns: u64,
}

impl Counts {
    /// This thread's counters now.
    pub fn now() -> Self {
        COUNTS.with(|c| {
            let v = |k: Counter| c[k as usize].get();
            Self {
                ops: v(Counter::Ops),
                storages: v(Counter::Storages),
                uploads: v(Counter::Uploads),
                readbacks: v(Counter::Readbacks),
                syncs: v(Counter::Syncs),
                launches: v(Counter::Launches),
                blas: v(Counter::Blas),
                cudnn: v(Counter::Cudnn),
                allocs: v(Counter::Allocs),
                memsets: v(Counter::Memsets),
                htod: v(Counter::Htod),
                dtoh: v(Counter::Dtoh),
                dtod: v(Counter::Dtod),
                waits: v(Counter::Waits),
                wait_ns: v(Counter::WaitNs),
            }
        })
    }

    /// The counts from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        let d = |a: u64, b: u64| a.wrapping_sub(b);
        Self {
            ops: d(self.ops, earlier.ops),
            storages: d(self.storages, earlier.storages),
            uploads: d(self.uploads, earlier.uploads),
            readbacks: d(self.readbacks, earlier.readbacks),
            syncs: d(self.syncs, earlier.syncs),
            launches: d(self.launches, earlier.launches),
            blas: d(self.blas, earlier.blas),
            cudnn: d(self.cudnn, earlier.cudnn),
            allocs: d(self.allocs, earlier.allocs),
            memsets: d(self.memsets, earlier.memsets),
            htod: d(self.htod, earlier.htod),
            dtoh: d(self.dtoh, earlier.dtoh),
            dtod: d(self.dtod, earlier.dtod),
            waits: d(self.waits, earlier.waits),
            wait_ns: d(self.wait_ns, earlier.wait_ns),
        }
    }
}
