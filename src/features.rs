//! Turns image files into pooled feature vectors per level, decoding on a separate thread so
//! decoding the next batch overlaps the network's work on the current one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;

use ndarray::{concatenate, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::backbone::{Levels, TorchBackbone};
use crate::data::image::{InputSize, PreparedImage, Preprocess};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Pooled features of a set of images: `per_level[k]` is images × channels for `levels[k]`.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub paths: Vec<PathBuf>,
    pub levels: Levels,
    pub per_level: Vec<Array2<f32>>,
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The features of one level.
    pub fn level(&self, level: u8) -> Option<ArrayView2<'_, f32>> {
        let index = self.levels.as_slice().iter().position(|&l| l == level)?;
        Some(self.per_level[index].view())
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> FeatureSet {
        FeatureSet {
            paths: indices.iter().map(|&i| self.paths[i].clone()).collect(),
            levels: self.levels.clone(),
            per_level: self.per_level.iter().map(|m| m.select(Axis(0), indices)).collect(),
        }
    }
}

/// What to do when an image cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadImage {
    /// Stop at the first bad image (fit/eval: a model silently fitted on fewer images is wrong).
    Stop,
    /// Collect the error and go on (score/heatmap report each bad file).
    Skip,
}

/// Feature extraction settings.
pub struct Extractor<'a> {
    pub backbone: &'a TorchBackbone,
    pub preprocess: Preprocess,
    pub levels: Levels,
    pub batch_size: usize,
}

/// Features of the images that could be read, and the errors of those that could not.
pub struct Extraction {
    pub features: FeatureSet,
    pub failures: Vec<Error>,
}

type Decoded = Vec<(usize, Result<PreparedImage>)>;

impl Extractor<'_> {
    /// Extracts features of `paths`, in order.
    pub fn extract(
        &self,
        paths: &[PathBuf],
        policy: OnBadImage,
        progress: &dyn Progress,
    ) -> Result<Extraction> {
        if self.batch_size == 0 {
            return Err(Error::param("--batch", "must be at least 1"));
        }
        progress.start(paths.len() as u64, "extracting features");
        let (sender, receiver) = mpsc::sync_channel::<Decoded>(2);
        let preprocess = &self.preprocess;
        let batch_size = self.batch_size;
        let result = std::thread::scope(|scope| {
            scope.spawn(move || {
                for (chunk_index, chunk) in paths.chunks(batch_size).enumerate() {
                    let decoded: Decoded = chunk
                        .par_iter()
                        .enumerate()
                        .map(|(i, path)| (chunk_index * batch_size + i, preprocess.prepare(path)))
                        .collect();
                    if sender.send(decoded).is_err() {
                        break; // the consumer stopped (an error): stop decoding
                    }
                }
            });
            let mut rows: Vec<(usize, Vec<ndarray::Array1<f32>>)> = Vec::with_capacity(paths.len());
            let mut failures = Vec::new();
            for decoded in receiver {
                let mut by_size: BTreeMap<(u32, u32), Vec<(usize, PreparedImage)>> =
                    BTreeMap::new();
                for (index, item) in decoded {
                    match item {
                        Ok(image) => by_size
                            .entry((image.width, image.height))
                            .or_default()
                            .push((index, image)),
                        Err(error) if policy == OnBadImage::Skip => failures.push(error),
                        Err(error) => return Err(error),
                    }
                }
                let mut done = 0;
                for group in by_size.values() {
                    let images: Vec<&PreparedImage> =
                        group.iter().map(|(_, image)| image).collect();
                    let pooled = self.backbone.pooled(&images, &self.levels)?;
                    for (row, (index, _)) in group.iter().enumerate() {
                        rows.push((*index, pooled.iter().map(|m| m.row(row).to_owned()).collect()));
                    }
                    done += group.len();
                }
                progress.advance(done as u64);
            }
            Ok((rows, failures))
        });
        progress.finish();
        let (mut rows, failures) = result?;
        rows.sort_by_key(|(index, _)| *index);
        let per_level = (0..self.levels.as_slice().len())
            .map(|k| {
                let views: Vec<_> =
                    rows.iter().map(|(_, levels)| levels[k].view().insert_axis(Axis(0))).collect();
                if views.is_empty() {
                    let channels =
                        self.backbone.info().channels[self.levels.as_slice()[k] as usize - 1];
                    Ok(Array2::zeros((0, channels)))
                } else {
                    concatenate(Axis(0), &views)
                        .map_err(|e| Error::numeric("features", e.to_string()))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let features = FeatureSet {
            paths: rows.iter().map(|(index, _)| paths[*index].clone()).collect(),
            levels: self.levels.clone(),
            per_level,
        };
        Ok(Extraction { features, failures })
    }
}

/// The preprocessing a backbone asks for, with optional size and aspect overrides.
pub fn preprocess_for(
    info: &crate::backbone::BackboneInfo,
    size: Option<InputSize>,
    aspect: crate::data::image::Aspect,
) -> Preprocess {
    let native = InputSize { width: info.input_size[1], height: info.input_size[0] };
    Preprocess { size: size.unwrap_or(native), aspect, mean: info.mean, std: info.std }
}
