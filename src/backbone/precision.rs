//! Numeric precision of the network: on the CPU fp32, or bfloat16 where the CPU has units for it;
//! on CUDA fp32, or fp16 autocast.

use crate::error::{Error, Result};

/// The precision asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// CPU: bf16 where the CPU has bf16 units (AMX or AVX-512 BF16), the backbone has a bf16
    /// variant and the input size is the one it was traced at; fp32 otherwise. CUDA: fp16
    /// autocast (fp32 for gradient maps).
    Auto,
    Fp32,
    /// The CPU's bf16 variant.
    Bf16,
    /// CUDA autocast: convolutions in fp16, reductions and normalisation in fp32.
    Fp16,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Precision::Auto),
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" => Ok(Precision::Fp16),
            _ => Err(Error::param(
                "--precision",
                format!("'{text}' is not auto, fp32, bf16 (CPU) or fp16 (CUDA)"),
            )),
        }
    }
}

/// True when this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16).
pub fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.split_whitespace().any(|flag| flag == "amx_bf16" || flag == "avx512_bf16"))
        .unwrap_or(false)
}
