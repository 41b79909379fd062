//! Backbones turn a batch of prepared images into feature maps, one per level (1–9).

pub mod device;
pub mod levels;
pub mod sidecar;
pub mod torchscript;

pub use device::DeviceSpec;
pub use levels::Levels;
pub use sidecar::BackboneInfo;
pub use torchscript::TorchBackbone;
