//! Runs an exported 9-level TorchScript backbone through tch, on the CPU or a CUDA device.

use std::path::Path;

use ndarray::Array2;
use sha2::{Digest, Sha256};
use tch::{CModule, Device, IValue, Kind, Tensor};

use super::levels::{Levels, LEVEL_COUNT};
use super::sidecar::{BackboneFiles, BackboneInfo};
use crate::data::image::PreparedImage;
use crate::error::{Error, Result};

/// A loaded backbone, ready to run on its device.
pub struct TorchBackbone {
    module: CModule,
    device: Device,
    files: BackboneFiles,
    /// The loaded file (the `.pt`, or a variant of it).
    path: std::path::PathBuf,
    file_sha256: String,
    variant: String,
}

impl TorchBackbone {
    /// Loads the fp32 TorchScript file onto `device`; checks it against its sidecar's checksum.
    pub fn load(files: BackboneFiles, device: Device) -> Result<Self> {
        Self::load_variant(files, device, None)
    }

    /// Loads the fp32 file (`variant` None) or a named CPU variant (`fp32_frozen`, `bf16`).
    pub fn load_variant(
        files: BackboneFiles,
        device: Device,
        variant: Option<&str>,
    ) -> Result<Self> {
        let (path, expected) = match variant {
            None => (files.torchscript.clone(), files.info.torchscript_sha256.clone()),
            Some(key) => {
                let entry = files.info.variants.get(key).ok_or_else(|| {
                    Error::input(
                        &files.torchscript,
                        format!("no {key} variant; re-export with scripts/export_backbone.py"),
                    )
                })?;
                (files.torchscript.with_extension(&entry.file_suffix), entry.sha256.clone())
            }
        };
        let sha256 = sha256_file(&path)?;
        if sha256 != expected {
            return Err(Error::input(
                &path,
                "does not match the checksum in its sidecar; re-export the backbone",
            ));
        }
        let mut module = CModule::load_on_device(&path, device)
            .map_err(|e| Error::input(&path, format!("not a loadable TorchScript model: {e}")))?;
        module.set_eval();
        let variant = variant.unwrap_or("fp32").to_string();
        Ok(TorchBackbone { module, device, files, path, file_sha256: sha256, variant })
    }

    pub fn info(&self) -> &BackboneInfo {
        &self.files.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fp32 `.pt` file whose checksum identifies the network.
    pub fn identity_path(&self) -> &Path {
        &self.files.torchscript
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// SHA-256 of the fp32 TorchScript file: identifies the network a model was fitted with,
    /// whichever variant of it runs.
    pub fn sha256(&self) -> &str {
        &self.files.info.torchscript_sha256
    }

    /// SHA-256 of the file actually loaded.
    pub fn file_sha256(&self) -> &str {
        &self.file_sha256
    }

    /// `fp32`, `fp32_frozen` or `bf16`.
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// Stacks same-sized prepared images into an `n × 3 × h × w` tensor on the device.
    pub fn batch_tensor(&self, images: &[&PreparedImage]) -> Result<Tensor> {
        let first = images.first().ok_or_else(|| Error::param("batch", "empty batch"))?;
        let (w, h) = (first.width, first.height);
        if images.iter().any(|i| (i.width, i.height) != (w, h)) {
            return Err(Error::param("batch", "images of one batch must share one size"));
        }
        let mut data = Vec::with_capacity(images.len() * first.chw.len());
        for image in images {
            data.extend_from_slice(&image.chw);
        }
        Ok(Tensor::from_slice(&data)
            .view([images.len() as i64, 3, h as i64, w as i64])
            .to_device(self.device))
    }

    /// The nine un-pooled feature maps for `input`.
    pub fn forward(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        tch::no_grad(|| self.forward_tracked(input))
    }

    /// Like [`TorchBackbone::forward`], but records autograd history (for input gradients).
    pub fn forward_tracked(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let output = self
            .module
            .forward_is(&[IValue::Tensor(input.shallow_clone())])
            .map_err(|e| Error::torch(format!("{}: forward pass", self.path().display()), e))?;
        let maps = match output {
            IValue::TensorList(maps) => maps,
            IValue::Tuple(items) => items
                .into_iter()
                .map(|item| match item {
                    IValue::Tensor(t) => Ok(t),
                    _ => Err(Error::input(self.path(), "forward returned a non-tensor")),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(Error::input(self.path(), "forward must return 9 feature maps")),
        };
        if maps.len() != LEVEL_COUNT as usize {
            return Err(Error::input(
                self.path(),
                format!("forward returned {} maps, expected 9", maps.len()),
            ));
        }
        Ok(maps)
    }

    /// Global-average-pooled features of the chosen levels: one `images × channels` matrix per
    /// level, in the order of `levels`.
    pub fn pooled(&self, images: &[&PreparedImage], levels: &Levels) -> Result<Vec<Array2<f32>>> {
        self.pool_maps(&self.forward(&self.batch_tensor(images)?)?, levels)
    }

    /// Global-average-pooled features of the chosen levels of a forward pass's nine maps.
    pub fn pool_maps(&self, maps: &[Tensor], levels: &Levels) -> Result<Vec<Array2<f32>>> {
        levels
            .as_slice()
            .iter()
            .map(|&level| {
                let map = &maps[level as usize - 1];
                let pooled =
                    map.mean_dim(&[2i64, 3][..], false, Kind::Float).to_device(Device::Cpu);
                tensor_to_array2(&pooled)
            })
            .collect()
    }

    /// ImageNet logits (the network's own classifier), to check the weights are real.
    pub fn classify(&self, images: &[&PreparedImage]) -> Result<Array2<f32>> {
        let input = self.batch_tensor(images)?;
        let logits = tch::no_grad(|| self.module.method_ts("classify", &[input]))
            .map_err(|e| Error::torch(format!("{}: classify", self.path().display()), e))?;
        tensor_to_array2(&logits.to_device(Device::Cpu).to_kind(Kind::Float))
    }
}

/// Copies a 2-D float tensor into an ndarray matrix.
pub fn tensor_to_array2(tensor: &Tensor) -> Result<Array2<f32>> {
    let size = tensor.size();
    if size.len() != 2 {
        return Err(Error::numeric(
            "tensor conversion",
            format!("expected 2 dimensions, got {size:?}"),
        ));
    }
    let values = Vec::<f32>::try_from(tensor.contiguous().view(-1))
        .map_err(|e| Error::torch("tensor conversion", e))?;
    Array2::from_shape_vec((size[0] as usize, size[1] as usize), values)
        .map_err(|e| Error::numeric("tensor conversion", e.to_string()))
}

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}
