//! Where a model runs, and the CUDA stream rule every thread follows.
//!
//! # One stream per GPU, shared by every thread
//!
//! `Device::new_cuda` gives cudarc's *per-thread* default stream: each thread that launches
//! work through it lands on its own stream. The element loads a model (uploads, dtype casts)
//! on its state-change thread and runs it on the engine's worker thread, so with per-thread
//! streams the worker's kernels would not be ordered after the loader's copies, and a buffer
//! allocated on one thread's stream could be freed on another's while still in use.
//!
//! So every model on CUDA ordinal N uses the same candle [`Device`], created once per process
//! with its own explicit stream (`Device::new_cuda_with_stream`). Whichever thread launches
//! work, it is queued on that one stream, in program order; allocation, use and free of every
//! buffer are ordered on it. Because all tensors of that device live on one stream, cudarc's
//! cross-stream event tracking (two CUDA events created per allocation, recorded per use) does
//! nothing useful, and it is switched off before the first allocation.
//!
//! Models on the same GPU therefore share a stream and run one after another, which is what a
//! single GPU does with them anyway.

use candle_core::{DType, Device};

use super::config::TextConfig;
use super::error::candle_message;
use super::{DTypeChoice, DeviceChoice, Error, Result};

/// Resolves `auto` and checks that the device exists in this build. CUDA devices come from the
/// process-wide table (one per ordinal, see the module documentation).
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => {
            if candle_core::utils::cuda_is_available() {
                shared_cuda_device(0).or(Ok(Device::Cpu))
            } else {
                Ok(Device::Cpu)
            }
        }
        DeviceChoice::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::Device(format!(
                    "device cuda:{n} requested but this build has no CUDA support (build with --features cuda)"
                )));
            }
            shared_cuda_device(n).map_err(|e| {
                Error::Device(format!(
                    "device cuda:{n} is not available: {}",
                    candle_message(&e)
                ))
            })
        }
    }
}

/// The quantization `choice` asks for on `device`: q8_0 on the CPU only, where candle's
/// quantized kernels are the ones this project measured (docs/benchmarks.md); none otherwise.
pub fn resolve_quantization(
    choice: DTypeChoice,
    device: &Device,
) -> Result<Option<candle_core::quantized::GgmlDType>> {
    match choice {
        DTypeChoice::Q8_0 if device.is_cpu() => Ok(Some(candle_core::quantized::GgmlDType::Q8_0)),
        DTypeChoice::Q8_0 => Err(Error::Device(
            "dtype q8_0 runs on the CPU only, and the model would load on a GPU: set \
             device=cpu, or dtype f16 or bf16 (or auto) for the GPU"
                .into(),
        )),
        _ => Ok(None),
    }
}

/// f32 on CPU; on a GPU f16 for OPT and bf16 for Flan-T5 (T5 overflows in f16).
pub fn resolve_dtype(choice: DTypeChoice, device: &Device, text: &TextConfig) -> DType {
    match choice {
        DTypeChoice::F32 | DTypeChoice::Q8_0 => DType::F32,
        DTypeChoice::F16 => DType::F16,
        DTypeChoice::BF16 => DType::BF16,
        DTypeChoice::Auto if device.is_cpu() => DType::F32,
        DTypeChoice::Auto => match text {
            TextConfig::Opt(_) => DType::F16,
            TextConfig::T5(_) => DType::BF16,
        },
    }
}

/// The process's one device for CUDA ordinal `n`, created on first use.
#[cfg(feature = "cuda")]
fn shared_cuda_device(n: usize) -> candle_core::Result<Device> {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    static DEVICES: LazyLock<Mutex<HashMap<usize, Device>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut devices = crate::sync::lock(&DEVICES);
    if let Some(device) = devices.get(&n) {
        return Ok(device.clone());
    }
    let device = Device::new_cuda_with_stream(n)?;
    // SAFETY: every tensor of this device is created on, used on and freed on its single
    // stream (all threads share this `Device`), so no cross-stream synchronisation is needed.
    // This runs before the device's first allocation, as cudarc requires.
    unsafe { device.as_cuda_device()?.disable_event_tracking() };
    devices.insert(n, device.clone());
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn shared_cuda_device(n: usize) -> candle_core::Result<Device> {
    Device::new_cuda(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_resolves_without_cuda() {
        assert!(resolve_device(DeviceChoice::Cpu).unwrap().is_cpu());
        assert!(resolve_device(DeviceChoice::Auto).is_ok());
    }

    /// The stream rule: two requests for one ordinal get the same device (same id, hence the
    /// same stream). Only in CUDA builds, which need a GPU to start.
    #[cfg(feature = "cuda")]
    #[test]
    fn one_device_per_ordinal() {
        let a = resolve_device(DeviceChoice::Cuda(0)).unwrap();
        let b = std::thread::spawn(|| resolve_device(DeviceChoice::Cuda(0)).unwrap())
            .join()
            .unwrap();
        assert!(a.same_device(&b));
        assert!(!a.as_cuda_device().unwrap().is_event_tracking());
    }
}
