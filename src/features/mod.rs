//! Turns image files into pooled feature vectors per level, decoding on a separate thread so
//! decoding the next batch overlaps the network's work on the current one.

pub mod cache;
pub mod cells;
pub mod embeddings;
pub mod patches;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

pub use cache::FeatureCache;
pub use embeddings::{EmbeddingKind, Embeddings};
pub use patches::PatchSet;

use crate::backbone::{Backbone, BackboneInfo, BatchLimit, Levels};
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
    pub batch: BatchLimit,
    /// Reuse and store pooled features across runs.
    pub cache: Option<FeatureCache>,
    /// Also keep this level's spatial map of every image the network runs on (not of cache
    /// hits), up to [`MAX_KEPT_MAP_BYTES`]: a review page maps those images without a second
    /// pass.
    pub map_level: Option<u8>,
}

/// At most this much memory holds kept maps; images beyond it are left to a second pass.
pub const MAX_KEPT_MAP_BYTES: usize = 512 << 20;

/// One image's spatial feature map of one level: `channels × height × width`, row-major.
#[derive(Debug, Clone)]
pub struct LevelMap {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

/// Kept maps of one level, aligned with an extraction's rows (`None` for images that came from
/// the cache or lay beyond the memory limit).
#[derive(Debug, Clone, Default)]
pub struct LevelMaps {
    pub level: Option<u8>,
    pub maps: Vec<Option<LevelMap>>,
}

impl LevelMaps {
    /// The kept map of row `row`, if any.
    pub fn get(&self, row: usize) -> Option<&LevelMap> {
        self.maps.get(row).and_then(Option::as_ref)
    }
}

/// Features of the images that could be read, and the errors of those that could not.
pub struct Extraction {
    pub features: FeatureSet,
    pub failures: Vec<Error>,
    /// How many images came from the cache rather than the network.
    pub cache_hits: usize,
    /// The maps kept for [`Extractor::map_level`].
    pub maps: LevelMaps,
}

/// One image after the decoding thread: its features from the cache, or ready network input.
enum Item {
    Cached(Vec<f32>),
    Prepared { image: PreparedImage, content: String },
}

type Decoded = Vec<(usize, Result<Item>)>;
/// Images waiting for the network, grouped by input size: (index, image, content hash).
type SizeGroups = BTreeMap<(u32, u32), Vec<(usize, PreparedImage, String)>>;

/// Computes one row per image of a same-sized group (given the images' input indices and content
/// hashes).
type RowCompute<'a> = dyn Fn(&[usize], &[&PreparedImage], &[&str]) -> Result<Vec<Vec<f32>>> + 'a;

/// Rows computed per image (by input index), the errors of unreadable images, cache hits.
type Rows = (Vec<(usize, Vec<f32>)>, Vec<Error>, usize);

impl Extractor<'_> {
    /// Extracts pooled features of `paths`, in order.
    pub fn extract(
        &self,
        paths: &[PathBuf],
        policy: OnBadImage,
        progress: &dyn Progress,
    ) -> Result<Extraction> {
        let all_levels = Levels::new((1..=9).collect())?;
        let kept = std::sync::Mutex::new(KeptMaps::default());
        // Each row: all nine pooled levels, concatenated (the cache keeps them all).
        let compute =
            |indices: &[usize], images: &[&PreparedImage], _: &[&str]| -> Result<Vec<Vec<f32>>> {
                let (pooled, map) = match (self.backbone, self.map_level) {
                    (Backbone::Torch(torch), Some(level)) => {
                        torch.pooled_keeping_map(images, &all_levels, Some(level))?
                    }
                    _ => (self.backbone.pooled(images, &all_levels)?, None),
                };
                if let Some(map) = map {
                    keep_maps(&kept, indices, &map)?;
                }
                Ok((0..images.len())
                    .map(|row| pooled.iter().flat_map(|m| m.row(row).to_vec()).collect())
                    .collect())
            };
        let (rows, failures, cache_hits) =
            self.extract_rows(paths, policy, progress, self.cache.as_ref(), &compute)?;
        let mut kept: BTreeMap<usize, LevelMap> = kept
            .into_inner()
            .map_err(|_| Error::numeric("features", "a kept map's lock was poisoned"))?
            .maps
            .into_iter()
            .collect();
        let maps = LevelMaps {
            level: self.map_level,
            maps: rows.iter().map(|(index, _)| kept.remove(index)).collect(),
        };
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
        Ok(Extraction { features, failures, cache_hits, maps })
    }

    /// Extracts patch features of `levels` (see [`patches`]) of `paths`, in order: the images
    /// that could be read, the errors of the others, and the cache hits.
    pub fn extract_patches(
        &self,
        paths: &[PathBuf],
        levels: &Levels,
        policy: OnBadImage,
        progress: &dyn Progress,
    ) -> Result<(PatchSet, Vec<Error>, usize)> {
        let torch = self.backbone.as_torch().ok_or_else(|| {
            Error::param("--scorer", "patch features need a CNN backbone (not hlac)")
        })?;
        let dim = patches::patch_dim(&self.backbone.info().channels, levels);
        // Each row: grid height, grid width, then the positions' values. The same pass gives
        // every level's pooled features: stored in the pooled cache, a pooled scorer on these
        // images (an ensemble's other member, a later eval) needs no second pass.
        let compute =
            |_: &[usize], images: &[&PreparedImage], contents: &[&str]| -> Result<Vec<Vec<f32>>> {
                let maps = torch.forward(&torch.batch_tensor(images)?)?;
                if let Some(pooled_cache) = &self.cache {
                    let pooled = torch.pool_maps(&maps, &Levels::new((1..=9).collect())?)?;
                    for (row, (image, content)) in images.iter().zip(contents).enumerate() {
                        let values: Vec<f32> =
                            pooled.iter().flat_map(|m| m.row(row).to_vec()).collect();
                        let squashed = (image.width, image.height)
                            == (self.preprocess.size.width, self.preprocess.size.height);
                        let aspect = if squashed { Aspect::Squash } else { Aspect::Keep };
                        pooled_cache.for_aspect(aspect).put(content, &values)?;
                    }
                }
                let embedded = patches::patch_embedding(&maps, levels)?.to_device(tch::Device::Cpu);
                let (h, w) = (embedded.size()[1], embedded.size()[2]);
                (0..images.len() as i64)
                    .map(|i| {
                        let values = Vec::<f32>::try_from(embedded.get(i).contiguous().view(-1))
                            .map_err(|e| Error::torch("patch features", e))?;
                        let mut row = Vec::with_capacity(values.len() + 2);
                        row.extend([h as f32, w as f32]);
                        row.extend(values);
                        Ok(row)
                    })
                    .collect()
            };
        let cache = self.cache.as_ref().map(|c| c.for_patches(levels, dim));
        let (rows, failures, cache_hits) =
            self.extract_rows(paths, policy, progress, cache.as_ref(), &compute)?;
        let mut set = PatchSet::empty(levels.clone(), dim);
        for (index, row) in rows {
            let grid = (row[0] as usize, row[1] as usize);
            set.push(paths[index].clone(), grid, &row[2..])?;
        }
        Ok((set, failures, cache_hits))
    }

    /// Extracts what a scorer reads (`kind`) for `paths`, in order: the embeddings of the images
    /// that could be read, the errors of the others, and the cache hits.
    pub fn embed(
        &self,
        paths: &[PathBuf],
        kind: EmbeddingKind,
        policy: OnBadImage,
        progress: &dyn Progress,
    ) -> Result<(Embeddings, Vec<Error>, usize)> {
        match kind {
            EmbeddingKind::Pooled => {
                let extraction = self.extract(paths, policy, progress)?;
                let embeddings = Embeddings::Pooled(extraction.features);
                Ok((embeddings, extraction.failures, extraction.cache_hits))
            }
            EmbeddingKind::Patches => {
                let (set, failures, hits) =
                    self.extract_patches(paths, &self.levels, policy, progress)?;
                Ok((Embeddings::Patches(set), failures, hits))
            }
            EmbeddingKind::Cells { grid } => {
                let Backbone::Hlac(hlac) = self.backbone else {
                    return Err(Error::param(
                        "--scorer",
                        "grid cells are HLAC's positions; CNN backbones give patches (--scorer knn)",
                    ));
                };
                // Cell features stop at the first unreadable image (they are for fit and eval).
                let set = cells::hlac_cell_patches(
                    hlac,
                    &self.preprocess,
                    paths,
                    &self.levels,
                    grid,
                    progress,
                )?;
                Ok((Embeddings::Patches(set), Vec::new(), 0))
            }
            EmbeddingKind::Members => Err(Error::param(
                "--scorer",
                "an ensemble's members are embedded by the pipeline, one backbone each",
            )),
        }
    }

    /// Decodes `paths` on a separate thread (a batch ahead) and runs `compute` on each group of
    /// same-sized images; rows come from `cache` where it has them, and go into it otherwise.
    fn extract_rows(
        &self,
        paths: &[PathBuf],
        policy: OnBadImage,
        progress: &dyn Progress,
        cache: Option<&FeatureCache>,
        compute: &RowCompute,
    ) -> Result<Rows> {
        if self.batch.images == 0 {
            return Err(Error::param("--batch", "must be at least 1"));
        }
        progress.start(paths.len() as u64, "extracting features");
        let (sender, receiver) = mpsc::sync_channel::<Decoded>(2);
        // Decoding runs a batch of the nominal input size ahead; kept aspects may run fewer.
        let size = self.preprocess.size;
        let batch_size = self.batch.images_of(size.width, size.height);
        let result = std::thread::scope(|scope| {
            scope.spawn(move || {
                for (chunk_index, chunk) in paths.chunks(batch_size).enumerate() {
                    let decoded: Decoded = chunk
                        .par_iter()
                        .enumerate()
                        .map(|(i, path)| (chunk_index * batch_size + i, self.load(path, cache)))
                        .collect();
                    if sender.send(decoded).is_err() {
                        break; // the consumer stopped (an error): stop decoding
                    }
                }
            });
            let mut rows: Vec<(usize, Vec<f32>)> = Vec::with_capacity(paths.len());
            let mut failures = Vec::new();
            let mut cache_hits = 0;
            // Images wait here until a full batch of one input size is ready (keep and auto give
            // images of several sizes), but never more than PENDING_BATCHES batches in all.
            let mut pending = SizeGroups::new();
            let run = |group: Vec<(usize, PreparedImage, String)>,
                       rows: &mut Vec<(usize, Vec<f32>)>|
             -> Result<()> {
                let indices: Vec<usize> = group.iter().map(|(index, _, _)| *index).collect();
                let images: Vec<&PreparedImage> = group.iter().map(|(_, image, _)| image).collect();
                let contents: Vec<&str> =
                    group.iter().map(|(_, _, content)| content.as_str()).collect();
                let computed = compute(&indices, &images, &contents)?;
                for ((index, image, content), values) in group.iter().zip(computed) {
                    if let Some(cache) = cache {
                        // Auto squashed the image exactly when it has the input size (a kept one
                        // of that size was resized the same way: same features either way).
                        let squashed = (image.width, image.height)
                            == (self.preprocess.size.width, self.preprocess.size.height);
                        let aspect = if squashed { Aspect::Squash } else { Aspect::Keep };
                        cache.for_aspect(aspect).put(content, &values)?;
                    }
                    rows.push((*index, values));
                }
                progress.advance(group.len() as u64);
                Ok(())
            };
            for decoded in receiver {
                for (index, item) in decoded {
                    match item {
                        Ok(Item::Cached(values)) => {
                            rows.push((index, values));
                            cache_hits += 1;
                            progress.advance(1);
                        }
                        Ok(Item::Prepared { image, content }) => pending
                            .entry((image.width, image.height))
                            .or_default()
                            .push((index, image, content)),
                        Err(error) if policy == OnBadImage::Skip => {
                            failures.push(error);
                            progress.advance(1);
                        }
                        Err(error) => return Err(error),
                    }
                }
                for group in take_batches(&mut pending, self.batch, PENDING_BATCHES * batch_size) {
                    run(group, &mut rows)?;
                }
            }
            for group in take_batches(&mut pending, self.batch, 0) {
                run(group, &mut rows)?;
            }
            Ok((rows, failures, cache_hits))
        });
        progress.finish();
        let (mut rows, failures, cache_hits) = result?;
        rows.sort_by_key(|(index, _)| *index);
        Ok((rows, failures, cache_hits))
    }

    /// Reads one file; answers from `cache` when possible, else decodes and prepares it.
    fn load(&self, path: &Path, cache: Option<&FeatureCache>) -> Result<Item> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        // Hash only when there is a cache to ask (hashing a 10 MB camera PNG is not free).
        let Some(cache) = cache else {
            // The full-size image lives only inside this call (one per decoding thread), so
            // memory stays bounded whatever the camera's resolution.
            let image = self.preprocess.prepare_bytes(path, &bytes)?;
            return Ok(Item::Prepared { image, content: String::new() });
        };
        let content = cache::content_hash(&bytes);
        let cache = if self.preprocess.aspect == Aspect::Auto {
            // Auto: the image's size (from its header) says which cache holds its features.
            image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
                .with_guessed_format()
                .ok()
                .and_then(|reader| reader.into_dimensions().ok())
                .map(|(width, height)| cache.for_aspect(Aspect::Auto.resolve(width, height)))
        } else {
            Some(cache)
        };
        if let Some(values) = cache.and_then(|c| c.get(&content)) {
            return Ok(Item::Cached(values));
        }
        Ok(Item::Prepared { image: self.preprocess.prepare_bytes(path, &bytes)?, content })
    }
}

/// What a scorer of `kind` reads for already-prepared images of one input size (score and serve
/// from memory, without files or cache).
pub fn embed_prepared(
    backbone: &Backbone,
    kind: EmbeddingKind,
    levels: &Levels,
    images: &[&PreparedImage],
) -> Result<Embeddings> {
    let paths = vec![PathBuf::new(); images.len()];
    match kind {
        EmbeddingKind::Pooled => Ok(Embeddings::Pooled(FeatureSet {
            paths,
            levels: levels.clone(),
            per_level: backbone.pooled(images, levels)?,
        })),
        EmbeddingKind::Patches => {
            let torch = backbone.as_torch().ok_or_else(|| {
                Error::param("--scorer", "patch features need a CNN backbone (not hlac)")
            })?;
            let maps = torch.forward(&torch.batch_tensor(images)?)?;
            patches_of_maps(&maps, levels, images.len())
        }
        EmbeddingKind::Cells { grid } => {
            let Backbone::Hlac(hlac) = backbone else {
                return Err(Error::param("--scorer", "grid cells are HLAC's positions"));
            };
            let dim: usize = levels.as_slice().iter().map(|&l| hlac.info().level_span(l).1).sum();
            let mut set = PatchSet::empty(levels.clone(), dim);
            for (image, path) in images.iter().zip(paths) {
                let values = cells::cell_values(hlac, &hlac.cell_features(image, grid)?, levels);
                set.push(path, (grid, grid), &values)?;
            }
            Ok(Embeddings::Patches(set))
        }
        EmbeddingKind::Members => Err(Error::param(
            "--scorer",
            "an ensemble's members are embedded by the pipeline, one backbone each",
        )),
    }
}

/// [`embed_prepared`] for several readers of one backbone at once (an ensemble's members that
/// share a network): one forward pass serves every pooled and patch reader of a CNN; other
/// readers embed on their own. One embedding per reader, in order.
pub fn embed_prepared_shared(
    backbone: &Backbone,
    readers: &[(EmbeddingKind, &Levels)],
    images: &[&PreparedImage],
) -> Result<Vec<Embeddings>> {
    let shares_a_pass =
        |kind: &EmbeddingKind| matches!(kind, EmbeddingKind::Pooled | EmbeddingKind::Patches);
    let torch = match backbone.as_torch() {
        Some(torch) if readers.len() > 1 && readers.iter().all(|(k, _)| shares_a_pass(k)) => torch,
        _ => {
            return readers
                .iter()
                .map(|&(kind, levels)| embed_prepared(backbone, kind, levels, images))
                .collect()
        }
    };
    let maps = torch.forward(&torch.batch_tensor(images)?)?;
    readers
        .iter()
        .map(|&(kind, levels)| match kind {
            EmbeddingKind::Pooled => Ok(Embeddings::Pooled(FeatureSet {
                paths: vec![PathBuf::new(); images.len()],
                levels: levels.clone(),
                per_level: torch.pool_maps(&maps, levels)?,
            })),
            _ => patches_of_maps(&maps, levels, images.len()),
        })
        .collect()
}

/// The patch features of `levels` of one forward pass's maps over `count` images.
fn patches_of_maps(maps: &[tch::Tensor], levels: &Levels, count: usize) -> Result<Embeddings> {
    let embedded = patches::patch_embedding(maps, levels)?.to_device(tch::Device::Cpu);
    let (h, w, dim) =
        (embedded.size()[1] as usize, embedded.size()[2] as usize, embedded.size()[3] as usize);
    let mut set = PatchSet::empty(levels.clone(), dim);
    let values = Vec::<f32>::try_from(embedded.contiguous().view(-1))
        .map_err(|e| Error::torch("patch features", e))?;
    for i in 0..count {
        set.push(PathBuf::new(), (h, w), &values[i * h * w * dim..(i + 1) * h * w * dim])?;
    }
    Ok(Embeddings::Patches(set))
}

/// Maps kept so far during an extraction, by input index, and the bytes they take.
#[derive(Default)]
struct KeptMaps {
    maps: Vec<(usize, LevelMap)>,
    bytes: usize,
}

/// Adds the maps of one batch (`images × channels × height × width`, the images at input
/// `indices`) to `kept`, while they fit in [`MAX_KEPT_MAP_BYTES`].
fn keep_maps(
    kept: &std::sync::Mutex<KeptMaps>,
    indices: &[usize],
    batch: &tch::Tensor,
) -> Result<()> {
    let [_, channels, height, width] = batch.size()[..] else {
        return Err(Error::numeric("features", "a kept map is not images × channels × h × w"));
    };
    let (channels, height, width) = (channels as usize, height as usize, width as usize);
    let per_image = channels * height * width;
    let mut kept =
        kept.lock().map_err(|_| Error::numeric("features", "a kept map's lock was poisoned"))?;
    let bytes = indices.len() * per_image * std::mem::size_of::<f32>();
    if kept.bytes + bytes > MAX_KEPT_MAP_BYTES {
        return Ok(());
    }
    let values =
        Vec::<f32>::try_from(batch.view(-1)).map_err(|e| Error::torch("kept feature map", e))?;
    for (k, &index) in indices.iter().enumerate() {
        let values = values[k * per_image..(k + 1) * per_image].to_vec();
        kept.maps.push((index, LevelMap { channels, height, width, values }));
    }
    kept.bytes += bytes;
    Ok(())
}

/// At most this many batches of images wait for a full batch of their input size.
const PENDING_BATCHES: usize = 4;

/// Removes the batches to run now from `pending`: every full batch (of as many images of the
/// group's size as `batch` allows), then (largest group first) partial ones until at most `keep`
/// images are left waiting.
fn take_batches(
    pending: &mut SizeGroups,
    batch: BatchLimit,
    keep: usize,
) -> Vec<Vec<(usize, PreparedImage, String)>> {
    let mut batches = Vec::new();
    for (&(width, height), group) in pending.iter_mut() {
        let batch_size = batch.images_of(width, height).max(1);
        while group.len() >= batch_size {
            batches.push(group.drain(..batch_size).collect());
        }
    }
    pending.retain(|_, group| !group.is_empty());
    while pending.values().map(Vec::len).sum::<usize>() > keep {
        let Some(largest) = pending.iter().max_by_key(|(_, g)| g.len()).map(|(size, _)| *size)
        else {
            break;
        };
        batches.extend(pending.remove(&largest));
    }
    batches
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

#[cfg(test)]
mod batching_tests {
    use super::*;

    fn pending(sizes: &[(u32, usize)]) -> SizeGroups {
        let mut groups = SizeGroups::new();
        let mut index = 0;
        for &(side, count) in sizes {
            for _ in 0..count {
                let image = PreparedImage { width: side, height: 32, chw: Vec::new() };
                groups.entry((side, 32)).or_default().push((index, image, String::new()));
                index += 1;
            }
        }
        groups
    }

    #[test]
    fn full_batches_run_first_and_few_images_wait() {
        let mut groups = pending(&[(32, 5), (64, 1), (96, 2), (128, 1)]);
        let batches = take_batches(&mut groups, BatchLimit::images(2), 3);
        // Every batch holds one input size and at most the batch size.
        for batch in &batches {
            assert!(!batch.is_empty() && batch.len() <= 2);
            assert!(batch.iter().all(|(_, image, _)| image.width == batch[0].1.width));
        }
        // The full batches (two of size 32, one of 96) ran; three single images may wait.
        assert_eq!(batches.iter().filter(|b| b.len() == 2).count(), 3);
        let waiting: usize = groups.values().map(Vec::len).sum();
        assert!(waiting <= 3, "{waiting} images wait");
        // At the end everything runs, each image exactly once.
        let rest = take_batches(&mut groups, BatchLimit::images(2), 0);
        let mut seen: Vec<usize> =
            batches.iter().chain(&rest).flatten().map(|(index, _, _)| *index).collect();
        seen.sort();
        assert_eq!(seen, (0..9).collect::<Vec<_>>());
        assert!(groups.is_empty());
    }

    #[test]
    fn a_pixel_limit_gives_larger_images_smaller_batches() {
        // Four images at most, and at most the pixels of two 64 × 32 images.
        let batch = BatchLimit { images: 4, pixels: Some(2 * 64 * 32) };
        let mut groups = pending(&[(32, 8), (64, 4), (128, 2), (256, 2)]);
        let batches = take_batches(&mut groups, batch, 0);
        let sizes = |side: u32| -> Vec<usize> {
            batches.iter().filter(|b| b[0].1.width == side).map(Vec::len).collect()
        };
        assert_eq!(sizes(32), vec![4, 4], "small images: the image count limits");
        assert_eq!(sizes(64), vec![2, 2]);
        assert_eq!(sizes(128), vec![1, 1]);
        assert_eq!(sizes(256), vec![1, 1], "an image over the limit still runs, alone");
        assert!(groups.is_empty());
    }
}
