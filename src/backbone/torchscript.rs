//! Runs an exported 9-level TorchScript backbone through tch, on the CPU or a CUDA device.
//!
//! On CUDA the input goes through one pinned host buffer (an asynchronous copy), is laid out
//! channels-last (as are the convolution weights: cuDNN's fast NHWC kernels), the forward pass
//! may run under fp16 autocast, and the pooled features of all requested levels come back in one
//! copy.

use std::path::Path;
use std::sync::Mutex;

use ndarray::Array2;
use sha2::{Digest, Sha256};
use tch::{CModule, Device, IValue, Kind, Tensor};

use super::allocator::MMAP_THRESHOLD;
use super::levels::{Levels, LEVEL_COUNT};
use super::sidecar::{BackboneFiles, BackboneInfo};
use crate::data::image::PreparedImage;
use crate::error::{Error, Result};

/// Values of the largest activation per input pixel: EfficientNet(-Lite)'s second stage expands
/// 16 channels to 96 at half the input's resolution (96 / 4), more than any other layer holds.
const LARGEST_ACTIVATION_PER_PIXEL: usize = 24;

/// A loaded backbone, ready to run on its device.
pub struct TorchBackbone {
    module: CModule,
    device: Device,
    files: BackboneFiles,
    /// The loaded file (the `.pt`, or a variant of it).
    path: std::path::PathBuf,
    file_sha256: String,
    variant: String,
    /// Run the forward pass under CUDA autocast (fp16 matrix work, fp32 where it matters).
    autocast: bool,
    /// Identifies the computation for the feature cache: the file and how it runs.
    cache_key: String,
    /// CUDA only: the pinned host buffer that batches are staged in.
    staging: Mutex<Option<Tensor>>,
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
        if device.is_cuda() {
            weights_to_channels_last(&module).map_err(|e| {
                Error::torch(format!("{}: channels-last weights", path.display()), e)
            })?;
        }
        let variant = variant.unwrap_or("fp32").to_string();
        Ok(TorchBackbone {
            module,
            device,
            files,
            path,
            cache_key: sha256.clone(),
            file_sha256: sha256,
            variant,
            autocast: false,
            staging: Mutex::new(None),
        })
    }

    /// Runs the fp32 file under CUDA fp16 autocast (cuDNN convolutions and matrix products in
    /// fp16, reductions and normalisation in fp32): the `fp16_autocast` precision.
    pub fn with_cuda_autocast(mut self) -> Result<Self> {
        if !self.device.is_cuda() || self.variant != "fp32" {
            return Err(Error::param(
                "--precision",
                "fp16 autocast runs the plain fp32 file on a CUDA device only",
            ));
        }
        self.autocast = true;
        self.variant = "fp16_autocast".to_string();
        self.cache_key = format!("{}+fp16_autocast", self.file_sha256);
        Ok(self)
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

    /// `fp32`, `fp32_frozen`, `bf16` (CPU) or `fp16_autocast` (CUDA).
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// Identifies the exact computation (file and precision), for the feature cache.
    pub fn cache_key(&self) -> &str {
        &self.cache_key
    }

    /// Input pixels one forward pass should hold at most, on the CPU: libtorch allocates every
    /// activation afresh, and glibc maps allocations over [`MMAP_THRESHOLD`] from the kernel each
    /// time, faulting in and zeroing every page (batches of 16 aspect-kept magnetic-tile images
    /// spent 15 of their 24 s in the kernel in fp32). The limit keeps the largest activation
    /// under it. None on CUDA (its caching allocator reuses memory). The bf16 variant runs its
    /// stem and first block in fp32, but their 8 values per input pixel (32 bytes) stay under
    /// the bf16 stage's 24 (48 bytes), so bf16 counts 2 bytes a value.
    pub fn pass_pixels(&self) -> Option<usize> {
        if self.device.is_cuda() {
            return None;
        }
        let bytes_per_value = if self.variant == "bf16" { 2 } else { 4 };
        Some(MMAP_THRESHOLD as usize / (LARGEST_ACTIVATION_PER_PIXEL * bytes_per_value))
    }

    /// Stacks same-sized prepared images into an `n × 3 × h × w` tensor on the device
    /// (channels-last on CUDA).
    pub fn batch_tensor(&self, images: &[&PreparedImage]) -> Result<Tensor> {
        let first = images.first().ok_or_else(|| Error::param("batch", "empty batch"))?;
        let (w, h) = (first.width, first.height);
        if images.iter().any(|i| (i.width, i.height) != (w, h)) {
            return Err(Error::param("batch", "images of one batch must share one size"));
        }
        let shape = [images.len() as i64, 3, h as i64, w as i64];
        if self.device.is_cuda() {
            return self.staged_batch(images, shape, false);
        }
        let mut data = Vec::with_capacity(images.len() * first.chw.len());
        for image in images {
            data.extend_from_slice(&image.chw);
        }
        Ok(Tensor::from_slice(&data).view(shape))
    }

    /// CUDA: copies the images into the pinned staging buffer, then to the device
    /// asynchronously, and lays the batch out channels-last there. `pad`: the batch keeps the
    /// buffer's full length (the rows past the images hold earlier images), so every forward
    /// pass has one shape: a new shape costs TorchScript seconds of re-optimisation on CUDA.
    fn staged_batch(
        &self,
        images: &[&PreparedImage],
        shape: [i64; 4],
        pad: bool,
    ) -> Result<Tensor> {
        let torch = |what: &str| {
            let what = format!("{}: {what}", self.path.display());
            move |e| Error::torch(what, e)
        };
        let mut staging = self.staging.lock().map_err(|_| Error::param("batch", "poisoned"))?;
        // The previous batch's asynchronous copy may still read the buffer: wait for it.
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
        let fits = staging.as_ref().is_some_and(|b| {
            let size = b.size();
            size[0] >= shape[0] && size[1..] == shape[1..]
        });
        if !fits {
            let empty = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))
                .map_err(torch("staging buffer"))?;
            // Page-locked, so the copy below runs asynchronously at full speed; where pinning is
            // refused the copy still works, synchronously, from ordinary memory.
            *staging = Some(empty.f_internal_pin_memory(self.device).unwrap_or(empty));
        }
        let buffer = staging.as_ref().expect("staging buffer was just made");
        let rows = if pad { buffer.size()[0] } else { shape[0] };
        let buffer = buffer.narrow(0, 0, rows);
        let per_image = images[0].chw.len();
        // SAFETY: `buffer` is a contiguous float tensor of exactly images × per_image values that
        // no other code reads or writes until the copy below is queued (the lock is held, and the
        // previous copy from it has finished: synchronize above).
        let values = unsafe {
            std::slice::from_raw_parts_mut(buffer.data_ptr() as *mut f32, images.len() * per_image)
        };
        // One thread: the pool's threads are busy decoding the next batch meanwhile.
        for (slot, image) in values.chunks_exact_mut(per_image).zip(images) {
            slot.copy_from_slice(&image.chw);
        }
        let on_device = buffer
            .f_to_device_(self.device, Kind::Float, true, false)
            .map_err(torch("copy to the device"))?;
        to_channels_last(&on_device).map_err(torch("channels-last input"))
    }

    /// The nine un-pooled feature maps for `input`, as fp32 (also under autocast).
    pub fn forward(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let maps = tch::no_grad(|| self.autocast_forward(input))?;
        if !self.autocast {
            return Ok(maps);
        }
        maps.iter()
            .map(|m| m.f_to_kind(Kind::Float).map_err(|e| Error::torch("autocast output", e)))
            .collect()
    }

    /// The forward pass, under autocast where this backbone uses it (maps may be fp16).
    fn autocast_forward(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let input = self.on_device(input)?;
        if !self.autocast {
            return self.forward_tracked(&input);
        }
        cuda_autocast::set_enabled(true);
        let maps = self.forward_tracked(&input);
        cuda_autocast::set_enabled(false);
        maps
    }

    /// `input` on this backbone's device (a no-op where it is there already).
    fn on_device(&self, input: &Tensor) -> Result<Tensor> {
        if input.device() == self.device {
            return Ok(input.shallow_clone());
        }
        input.f_to_device(self.device).map_err(|e| Error::torch("copy to the device", e))
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
    /// On CUDA the pooled levels come back to the host in one copy.
    pub fn pooled(&self, images: &[&PreparedImage], levels: &Levels) -> Result<Vec<Array2<f32>>> {
        Ok(self.pooled_keeping_map(images, levels, None)?.0)
    }

    /// [`TorchBackbone::pooled`], also returning the spatial map of `map_level` from the same
    /// pass (fp32 on the host, `images × channels × height × width`): the pooled features are
    /// exactly `pooled`'s either way.
    pub fn pooled_keeping_map(
        &self,
        images: &[&PreparedImage],
        levels: &Levels,
        map_level: Option<u8>,
    ) -> Result<(Vec<Array2<f32>>, Option<Tensor>)> {
        let input = if self.device.is_cuda() {
            let first = images.first().ok_or_else(|| Error::param("batch", "empty batch"))?;
            let shape = [images.len() as i64, 3, first.height as i64, first.width as i64];
            if images.iter().any(|i| (i.width, i.height) != (first.width, first.height)) {
                return Err(Error::param("batch", "images of one batch must share one size"));
            }
            self.staged_batch(images, shape, true)?
        } else {
            self.batch_tensor(images)?
        };
        let torch = |e| Error::torch(format!("{}: pooling", self.path.display()), e);
        let rows = images.len() as i64; // without the padding rows
        let (pooled, kept) = tch::no_grad(|| -> Result<(Tensor, Option<Tensor>)> {
            let maps = self.autocast_forward(&input)?;
            let kept = map_level
                .map(|level| {
                    let map = maps.get(level as usize - 1).ok_or_else(|| {
                        Error::param("--levels", format!("no level {level} to keep"))
                    })?;
                    map.f_narrow(0, 0, rows)
                        .and_then(|m| m.f_to_kind(Kind::Float))
                        .and_then(|m| m.f_to_device(Device::Cpu))
                        .and_then(|m| m.f_contiguous())
                        .map_err(torch)
                })
                .transpose()?;
            let means = levels
                .as_slice()
                .iter()
                .map(|&level| {
                    maps[level as usize - 1].f_mean_dim(&[2i64, 3][..], false, Kind::Float)
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(torch)?;
            let pooled = Tensor::f_cat(&means, 1)
                .and_then(|t| t.f_narrow(0, 0, rows))
                .and_then(|t| t.f_to_device(Device::Cpu))
                .map_err(torch)?;
            Ok((pooled, kept))
        })?;
        let all = tensor_to_array2(&pooled)?;
        let mut start = 0;
        let per_level = levels
            .as_slice()
            .iter()
            .map(|&level| {
                let width = self.files.info.channels[level as usize - 1];
                if start + width > all.ncols() {
                    return Err(Error::input(
                        self.path(),
                        "a level has fewer channels than its sidecar says",
                    ));
                }
                let block = all.slice(ndarray::s![.., start..start + width]).to_owned();
                start += width;
                Ok(block)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((per_level, kept))
    }

    /// Global-average-pooled features of the chosen levels of a forward pass's nine maps (the
    /// by-product of a pass made for something else).
    pub fn pool_maps(&self, maps: &[Tensor], levels: &Levels) -> Result<Vec<Array2<f32>>> {
        levels
            .as_slice()
            .iter()
            .map(|&level| {
                let pooled = maps[level as usize - 1]
                    .mean_dim(&[2i64, 3][..], false, Kind::Float)
                    .to_device(Device::Cpu);
                tensor_to_array2(&pooled)
            })
            .collect()
    }

    /// ImageNet logits (the network's own classifier), to check the weights are real.
    pub fn classify(&self, images: &[&PreparedImage]) -> Result<Array2<f32>> {
        let input = self.on_device(&self.batch_tensor(images)?)?;
        let logits = tch::no_grad(|| self.module.method_ts("classify", &[input]))
            .map_err(|e| Error::torch(format!("{}: classify", self.path().display()), e))?;
        tensor_to_array2(&logits.to_device(Device::Cpu).to_kind(Kind::Float))
    }
}

/// CUDA autocast on or off for the calling thread, through libtorch's current API: tch's
/// `autocast` calls the deprecated `at::autocast::set_enabled`, and libtorch prints deprecation
/// warnings for that on every run. Autocast's cache of fp16 weight copies is kept between batches
/// (the weights never change), so each weight is cast once per process.
mod cuda_autocast {
    extern "C" {
        // `void at::autocast::set_autocast_enabled(c10::DeviceType, bool)` in libtorch_cpu, the
        // same symbol in libtorch 2.11 and 2.13; DeviceType is an int8_t enum (CUDA = 1).
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        fn set_autocast_enabled(device_type: i8, enabled: bool);
    }

    const CUDA: i8 = 1;

    pub fn set_enabled(enabled: bool) {
        // SAFETY: sets a thread-local flag of libtorch; both arguments are plain values of the
        // C++ signature above (an 8-bit enum and a bool, passed as in C).
        unsafe { set_autocast_enabled(CUDA, enabled) }
    }
}

/// The same values laid out channels-last (NHWC strides, NCHW shape).
fn to_channels_last(tensor: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
    tensor.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])
}

/// Lays the module's 4-D weights (convolutions) out channels-last, in place, as PyTorch's
/// `module.to(memory_format=torch.channels_last)` does: cuDNN then runs its NHWC kernels without
/// converting each weight at every call.
fn weights_to_channels_last(module: &CModule) -> std::result::Result<(), tch::TchError> {
    tch::no_grad(|| {
        for (_, mut weight) in module.named_parameters()? {
            if weight.dim() == 4 {
                let laid_out = to_channels_last(&weight)?;
                let _aliased = weight.f_set_source_tensor_(&laid_out)?;
            }
        }
        Ok(())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lite0() -> BackboneFiles {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        BackboneFiles::locate("efficientnet_lite0", &models).expect("run scripts/setup.sh first")
    }

    /// The CUDA layout changes (channels-last weights and input) keep the values: checked on the
    /// CPU, where the same libtorch calls run.
    #[test]
    fn channels_last_weights_and_input_keep_the_features() {
        let backbone = TorchBackbone::load(lite0(), Device::Cpu).unwrap();
        let input = Tensor::randn([2, 3, 96, 128], (Kind::Float, Device::Cpu));
        let before = backbone.forward(&input).unwrap();
        weights_to_channels_last(&backbone.module).unwrap();
        let (_, weight) = backbone
            .module
            .named_parameters()
            .unwrap()
            .into_iter()
            .find(|(_, w)| w.dim() == 4)
            .unwrap();
        let size = weight.size();
        let nhwc = [size[1] * size[2] * size[3], 1, size[1] * size[3], size[1]];
        assert_eq!(weight.stride(), nhwc, "weights not channels-last");
        let laid_out = to_channels_last(&input).unwrap();
        assert_eq!(laid_out.stride()[1], 1);
        let after = backbone.forward(&laid_out).unwrap();
        for (a, b) in before.iter().zip(&after) {
            let scale = a.abs().max().double_value(&[]).max(1e-6);
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff / scale < 1e-4, "channels-last changed a level by {diff} (scale {scale})");
        }
    }

    #[test]
    fn autocast_is_refused_on_the_cpu() {
        let backbone = TorchBackbone::load(lite0(), Device::Cpu).unwrap();
        assert!(backbone.with_cuda_autocast().is_err());
    }
}
