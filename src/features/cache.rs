//! On-disk cache of pooled features: one file per image content, per backbone and preprocessing.
//!
//! Key: `<backbone sha256>-<preprocessing hash>/<image sha256>.f32`. The value holds all nine
//! pooled levels (the network computes them all anyway), so a later run with other levels, or
//! another fold split, never runs the network again. Content hashing means renamed or copied
//! images hit the cache, and an edited image misses it. With `--aspect auto` each image is
//! looked up in the squash or keep cache, whichever it resolves to, so the three share entries.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::data::image::{Aspect, Preprocess, PREPARATION};
use crate::error::{Error, Result};
use crate::report::atomic;

/// A feature cache folder for one backbone and one preprocessing.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
    width: EntryWidth,
    /// `--aspect auto`: the caches of squash and keep, where each image's features live (they
    /// are the same features), so auto, squash and keep runs share them.
    resolved: Option<Box<[FeatureCache; 2]>>,
}

/// How many floats an entry holds.
#[derive(Debug, Clone, Copy)]
enum EntryWidth {
    /// Always this many (pooled levels).
    Fixed(usize),
    /// A patch grid: `h, w`, then `h × w × dim` values (sizes vary with `--aspect keep`).
    Grid { dim: usize },
}

impl FeatureCache {
    /// Opens the cache under `root` (created on the first store) for the given computation
    /// (backbone file, hence precision) and preprocessing;
    /// `width` is the number of floats per image (all levels).
    pub fn open(
        root: &Path,
        backbone_sha256: &str,
        preprocess: &Preprocess,
        width: usize,
    ) -> Result<Self> {
        let mut settings = serde_json::to_vec(preprocess)
            .map_err(|e| Error::numeric("feature cache", e.to_string()))?;
        // The same settings prepared by another decoder or resizer give other features.
        settings.extend_from_slice(PREPARATION.as_bytes());
        let settings_hash = format!("{:x}", Sha256::digest(&settings));
        let dir = root.join(format!(
            "{}-{}",
            &backbone_sha256[..16.min(backbone_sha256.len())],
            &settings_hash[..16]
        ));
        let resolved = if preprocess.aspect == Aspect::Auto {
            let at = |aspect| {
                let fixed = Preprocess { aspect, ..preprocess.clone() };
                FeatureCache::open(root, backbone_sha256, &fixed, width)
            };
            Some(Box::new([at(Aspect::Squash)?, at(Aspect::Keep)?]))
        } else {
            None
        };
        Ok(FeatureCache { dir, width: EntryWidth::Fixed(width), resolved })
    }

    /// The cache holding the features of an image that `--aspect auto` resolved to `aspect`
    /// (itself for a fixed aspect).
    pub fn for_aspect(&self, aspect: Aspect) -> &FeatureCache {
        match (&self.resolved, aspect) {
            (Some(caches), Aspect::Keep) => &caches[1],
            (Some(caches), _) => &caches[0],
            (None, _) => self,
        }
    }

    /// The cache of patch features of `levels` (`dim` values per position) for the same
    /// computation, in a sibling folder (and, for `--aspect auto`, its squash and keep ones).
    pub fn for_patches(&self, levels: &crate::backbone::Levels, dim: usize) -> FeatureCache {
        let mut name = self.dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(format!(
            "-patches{}",
            levels.as_slice().iter().map(|l| l.to_string()).collect::<String>()
        ));
        FeatureCache {
            dir: self.dir.with_file_name(name),
            width: EntryWidth::Grid { dim },
            resolved: self.resolved.as_ref().map(|caches| {
                Box::new([caches[0].for_patches(levels, dim), caches[1].for_patches(levels, dim)])
            }),
        }
    }

    fn entry(&self, content_sha256: &str) -> PathBuf {
        self.dir.join(format!("{content_sha256}.f32"))
    }

    /// The cached features of an image with this content hash; a damaged entry counts as a miss.
    pub fn get(&self, content_sha256: &str) -> Option<Vec<f32>> {
        let bytes = fs::read(self.entry(content_sha256)).ok()?;
        if bytes.len() % 4 != 0 {
            return None;
        }
        let values: Vec<f32> =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let expected = match self.width {
            EntryWidth::Fixed(width) => width,
            EntryWidth::Grid { dim } => match values.get(..2) {
                Some(&[h, w]) if h >= 1.0 && w >= 1.0 => 2 + h as usize * w as usize * dim,
                _ => return None,
            },
        };
        (values.len() == expected && values.iter().all(|v| v.is_finite())).then_some(values)
    }

    /// Stores an image's features (atomically, so concurrent runs never see half an entry).
    pub fn put(&self, content_sha256: &str, values: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        atomic::write_file(&self.entry(content_sha256), &bytes)
    }
}

/// SHA-256 of a byte slice, lower-case hex.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::InputSize;

    #[test]
    fn auto_shares_the_squash_and_keep_caches() {
        let root = Path::new("cache");
        let preprocess = |aspect| Preprocess {
            size: InputSize { width: 224, height: 224 },
            aspect,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        let open = |aspect| FeatureCache::open(root, "abc", &preprocess(aspect), 9).unwrap();
        let (auto, squash, keep) = (open(Aspect::Auto), open(Aspect::Squash), open(Aspect::Keep));
        assert_eq!(auto.for_aspect(Aspect::Squash).dir, squash.dir);
        assert_eq!(auto.for_aspect(Aspect::Keep).dir, keep.dir);
        assert_ne!(squash.dir, keep.dir);
        assert_eq!(squash.for_aspect(Aspect::Keep).dir, squash.dir);
    }
}
