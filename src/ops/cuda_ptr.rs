//! Device addresses of candle's CUDA buffers, for the raw cuDNN calls and kernel launches of
//! normlab's CUDA ops (built with the `cuda` feature): kernels take plain pointers, which
//! cudarc's typed launch arguments do not give for a tensor's storage at an offset.

use candle_core::cuda::cudarc::driver::{CudaSlice, DevicePtr, DeviceSlice};
use candle_core::cuda::CudaDType;
use candle_core::{bail, CudaStorage, Layout, Result, Tensor};

/// The device address of a contiguous CUDA operand of element type `T` (at its layout's
/// offset); `what` names it in errors.
fn typed_address<T: CudaDType>(s: &CudaStorage, l: &Layout, what: &str) -> Result<u64> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("normlab CUDA op: {what} must be contiguous") };
    let view = s.as_cuda_slice::<T>()?.slice(a..b);
    let (ptr, _sync) = view.device_ptr(view.stream());
    Ok(ptr)
}

/// The address of a contiguous f32 CUDA operand.
pub(crate) fn address(s: &CudaStorage, l: &Layout, what: &str) -> Result<u64> {
    typed_address::<f32>(s, l, what)
}

/// [`typed_address`] of a tensor on a CUDA device.
fn typed_tensor_address<T: CudaDType>(t: &Tensor, what: &str) -> Result<u64> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cuda(s) => typed_address::<T>(s, layout, what),
        _ => bail!("normlab CUDA op: {what} must be on a CUDA device"),
    }
}

/// The address of a contiguous f32 tensor on a CUDA device.
pub(crate) fn tensor_address(t: &Tensor, what: &str) -> Result<u64> {
    typed_tensor_address::<f32>(t, what)
}

/// The address of a contiguous u32 tensor on a CUDA device (labels, indices).
pub(crate) fn u32_address(t: &Tensor, what: &str) -> Result<u64> {
    typed_tensor_address::<u32>(t, what)
}

/// The error of a CUDA-only custom op asked to run on the CPU; `what` names the op.
pub(crate) fn not_on_cpu<T>(what: &str) -> Result<T> {
    bail!("normlab's CUDA {what} runs on CUDA tensors only")
}

/// The address of an owned output buffer.
pub(crate) fn slice_address(s: &CudaSlice<f32>) -> u64 {
    let (ptr, _sync) = s.device_ptr(s.stream());
    ptr
}
