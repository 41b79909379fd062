//! Choosing where the network runs: `auto`, `cpu`, `cuda` or `cuda:N`.
//!
//! The linker drops libtorch_cuda.so from the binary because no symbol of it is referenced
//! directly, which would leave CUDA unavailable. It is therefore loaded explicitly before CUDA is
//! queried — but only where an NVIDIA driver is present, so CPU machines pay nothing.

use crate::error::{Error, Result};

/// A device request as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when available, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| {
                    Error::param("--device", format!("'{text}' is not auto, cpu, cuda or cuda:N"))
                }),
        }
    }
}

impl DeviceSpec {
    /// The tch device for this request; an explicit CUDA request without CUDA is an error.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            DeviceSpec::Cpu => Ok(tch::Device::Cpu),
            DeviceSpec::Auto => {
                Ok(if cuda_device_count() > 0 { tch::Device::Cuda(0) } else { tch::Device::Cpu })
            }
            DeviceSpec::Cuda(index) => {
                let count = cuda_device_count();
                if index < count {
                    Ok(tch::Device::Cuda(index))
                } else if count == 0 {
                    Err(Error::param(
                        "--device",
                        "CUDA is not available on this machine (no NVIDIA driver or GPU found)",
                    ))
                } else {
                    Err(Error::param(
                        "--device",
                        format!("cuda:{index} requested, but only {count} CUDA device(s) exist"),
                    ))
                }
            }
        }
    }
}

/// Number of usable CUDA devices, loading libtorch_cuda first where a driver exists.
pub fn cuda_device_count() -> usize {
    if !load_cuda_libraries() {
        return 0;
    }
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

fn load_cuda_libraries() -> bool {
    // The driver library exists only on machines with an NVIDIA driver: probing it is cheap.
    if !dlopen("libcuda.so.1") {
        return false;
    }
    let dir = option_env!("ANODET_LIBTORCH_LIB").unwrap_or("");
    let path = std::path::Path::new(dir).join("libtorch_cuda.so");
    dlopen(&path.to_string_lossy()) || dlopen("libtorch_cuda.so")
}

fn dlopen(name: &str) -> bool {
    let Ok(c_name) = std::ffi::CString::new(name) else { return false };
    // SAFETY: dlopen with a valid NUL-terminated string; the handle is intentionally kept open
    // for the life of the process (the library registers CUDA support with libtorch).
    let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !handle.is_null()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("cuda:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }
}
