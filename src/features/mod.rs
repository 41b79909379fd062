//! Turns image files into pooled feature vectors per level, decoding on a separate thread so
//! decoding the next batch overlaps the network's work on the current one.

pub mod cache;
pub mod cells;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

pub use cache::FeatureCache;

use crate::backbone::{Backbone, BackboneInfo, Levels};
use crate::data::image::{Aspect, InputSize, PreparedImage, Preprocess};
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

/// How features are made: which backbone, which levels, at what input size and aspect.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    /// A backbone name in the models folder, a path to a `.pt` file, or `hlac`.
    pub backbone: String,
    pub levels: Levels,
    /// Input size (default: the backbone's own).
    pub size: Option<InputSize>,
    pub aspect: Aspect,
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
    pub backbone: &'a Backbone,
    pub preprocess: Preprocess,
    pub levels: Levels,
    pub batch_size: usize,
    /// Reuse and store pooled features across runs.
    pub cache: Option<FeatureCache>,
}

/// Features of the images that could be read, and the errors of those that could not.
pub struct Extraction {
    pub features: FeatureSet,
    pub failures: Vec<Error>,
    /// How many images came from the cache rather than the network.
    pub cache_hits: usize,
}

/// One image after the decoding thread: its features from the cache, or ready network input.
enum Item {
    Cached(Vec<f32>),
    Prepared { image: PreparedImage, content: String },
}

type Decoded = Vec<(usize, Result<Item>)>;
/// Images waiting for the network, grouped by input size: (index, image, content hash).
type SizeGroups = BTreeMap<(u32, u32), Vec<(usize, PreparedImage, String)>>;

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
        let all_levels = Levels::new((1..=9).collect())?;
        progress.start(paths.len() as u64, "extracting features");
        let (sender, receiver) = mpsc::sync_channel::<Decoded>(2);
        let batch_size = self.batch_size;
        let result = std::thread::scope(|scope| {
            scope.spawn(move || {
                for (chunk_index, chunk) in paths.chunks(batch_size).enumerate() {
                    let decoded: Decoded = chunk
                        .par_iter()
                        .enumerate()
                        .map(|(i, path)| (chunk_index * batch_size + i, self.load(path)))
                        .collect();
                    if sender.send(decoded).is_err() {
                        break; // the consumer stopped (an error): stop decoding
                    }
                }
            });
            // Each row: all nine pooled levels, concatenated.
            let mut rows: Vec<(usize, Vec<f32>)> = Vec::with_capacity(paths.len());
            let mut failures = Vec::new();
            let mut cache_hits = 0;
            for decoded in receiver {
                let mut by_size = SizeGroups::new();
                let mut done = 0;
                for (index, item) in decoded {
                    match item {
                        Ok(Item::Cached(values)) => {
                            rows.push((index, values));
                            cache_hits += 1;
                            done += 1;
                        }
                        Ok(Item::Prepared { image, content }) => by_size
                            .entry((image.width, image.height))
                            .or_default()
                            .push((index, image, content)),
                        Err(error) if policy == OnBadImage::Skip => failures.push(error),
                        Err(error) => return Err(error),
                    }
                }
                for group in by_size.values() {
                    let images: Vec<&PreparedImage> =
                        group.iter().map(|(_, image, _)| image).collect();
                    let pooled = self.backbone.pooled(&images, &all_levels)?;
                    for (row, (index, _, content)) in group.iter().enumerate() {
                        let values: Vec<f32> =
                            pooled.iter().flat_map(|m| m.row(row).to_vec()).collect();
                        if let Some(cache) = &self.cache {
                            cache.put(content, &values)?;
                        }
                        rows.push((*index, values));
                    }
                    done += group.len();
                }
                progress.advance(done as u64);
            }
            Ok((rows, failures, cache_hits))
        });
        progress.finish();
        let (mut rows, failures, cache_hits) = result?;
        rows.sort_by_key(|(index, _)| *index);
        let info = self.backbone.info();
        let per_level = self
            .levels
            .as_slice()
            .iter()
            .map(|&level| {
                let (start, width) = info.level_span(level);
                Array2::from_shape_fn((rows.len(), width), |(i, j)| rows[i].1[start + j])
            })
            .collect();
        let features = FeatureSet {
            paths: rows.iter().map(|(index, _)| paths[*index].clone()).collect(),
            levels: self.levels.clone(),
            per_level,
        };
        Ok(Extraction { features, failures, cache_hits })
    }

    /// Reads one file; answers from the cache when possible, else decodes and prepares it.
    fn load(&self, path: &Path) -> Result<Item> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        // Hash only when there is a cache to ask (hashing a 10 MB camera PNG is not free).
        let content = match &self.cache {
            Some(cache) => {
                let content = cache::content_hash(&bytes);
                if let Some(values) = cache.get(&content) {
                    return Ok(Item::Cached(values));
                }
                content
            }
            None => String::new(),
        };
        // The full-size image lives only inside this call (one per decoding thread), so memory
        // stays bounded whatever the camera's resolution.
        Ok(Item::Prepared { image: self.preprocess.prepare_bytes(path, &bytes)?, content })
    }
}

/// The preprocessing a backbone asks for, with optional size and aspect overrides.
pub fn preprocess_for(info: &BackboneInfo, size: Option<InputSize>, aspect: Aspect) -> Preprocess {
    let native = InputSize { width: info.input_size[1], height: info.input_size[0] };
    Preprocess { size: size.unwrap_or(native), aspect, mean: info.mean, std: info.std }
}

/// Floats per image when all nine levels are pooled.
pub fn all_levels_width(info: &BackboneInfo) -> usize {
    info.channels.iter().sum()
}
