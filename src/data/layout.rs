//! Finds the samples of a category on disk (MVTec AD or simple good/bad layout) and pairs masks.
//!
//! MVTec AD layout:
//! ```text
//! <root>/<category>/train/good/*               good images to fit on
//! <root>/<category>/test/good/*                good test images
//! <root>/<category>/test/<defect_type>/*       defective test images
//! <root>/<category>/ground_truth/<defect_type>/<stem>_mask.png
//! ```
//! Simple layout: `<root>/<category>/good/*` and optionally `<root>/<category>/bad/*`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// File endings anodet treats as images (case-insensitive). Other files in an image folder
/// (notes, thumbnails databases, hidden files) are ignored.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Which folder layout a category uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `train/good`, `test/<type>`, `ground_truth/<type>`.
    Mvtec,
    /// `good/` and optionally `bad/`.
    Simple,
}

/// Whether a sample belongs to the training or the test part of the category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

/// One image of a category, with everything known about it from the folder structure.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub path: PathBuf,
    pub split: Split,
    /// `"good"` for good images, else the defect type (folder name; `"bad"` in the simple layout).
    pub defect_type: String,
    /// Pixel mask (0 = good, non-zero = defect), when the category has ground truth.
    pub mask: Option<PathBuf>,
}

impl Sample {
    /// True for defective samples.
    pub fn is_defective(&self) -> bool {
        self.defect_type != "good"
    }
}

/// A category found on disk: its samples sorted by (split, defect type, file name).
#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub root: PathBuf,
    pub layout: Layout,
    pub samples: Vec<Sample>,
}

impl Category {
    /// Finds `<data_root>/<name>` and lists its samples.
    pub fn discover(data_root: &Path, name: &str) -> Result<Category> {
        let root = data_root.join(name);
        if name.is_empty() || name.contains(['/', '\\']) || name == ".." || name == "." {
            return Err(Error::param("--category", format!("'{name}' is not a category name")));
        }
        if !root.is_dir() {
            let hint = match list_dirs(data_root) {
                Ok(found) if !found.is_empty() => {
                    format!("; categories there: {}", found.join(", "))
                }
                Ok(_) => String::new(),
                Err(_) => format!("; {} is not a readable folder", data_root.display()),
            };
            return Err(Error::input(&root, format!("no such category folder{hint}")));
        }
        let (layout, samples) = if root.join("train").join("good").is_dir() {
            (Layout::Mvtec, discover_mvtec(&root)?)
        } else if root.join("good").is_dir() {
            (Layout::Simple, discover_simple(&root)?)
        } else {
            return Err(Error::input(
                &root,
                "unknown layout; expected train/good (MVTec AD) or good/ (simple layout)",
            ));
        };
        Ok(Category { name: name.to_string(), root, layout, samples })
    }

    /// Good images to fit on: `train/good` (MVTec) or `good/` (simple layout).
    pub fn training_good(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.split == Split::Train && !s.is_defective()).collect()
    }

    /// Test samples (MVTec `test/*`; the simple layout's `bad/` images).
    pub fn test_samples(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.split == Split::Test).collect()
    }

    /// Every labelled sample, good and defective, train and test.
    pub fn all(&self) -> &[Sample] {
        &self.samples
    }
}

fn discover_mvtec(root: &Path) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for path in list_images(&root.join("train").join("good"))? {
        samples.push(Sample { path, split: Split::Train, defect_type: "good".into(), mask: None });
    }
    let test = root.join("test");
    let ground_truth = root.join("ground_truth");
    if test.is_dir() {
        for defect_type in list_dirs(&test)? {
            let masks_dir = ground_truth.join(&defect_type);
            let has_masks = defect_type != "good" && masks_dir.is_dir();
            for path in list_images(&test.join(&defect_type))? {
                let mask = if has_masks { Some(mask_for(&path, &masks_dir)?) } else { None };
                samples.push(Sample {
                    path,
                    split: Split::Test,
                    defect_type: defect_type.clone(),
                    mask,
                });
            }
        }
    }
    Ok(samples)
}

fn discover_simple(root: &Path) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for path in list_images(&root.join("good"))? {
        samples.push(Sample { path, split: Split::Train, defect_type: "good".into(), mask: None });
    }
    let bad = root.join("bad");
    if bad.is_dir() {
        for path in list_images(&bad)? {
            samples.push(Sample {
                path,
                split: Split::Test,
                defect_type: "bad".into(),
                mask: None,
            });
        }
    }
    Ok(samples)
}

/// The mask of a defective image: `ground_truth/<type>/<stem>_mask.png` (MVTec AD naming).
fn mask_for(image: &Path, masks_dir: &Path) -> Result<PathBuf> {
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mask = masks_dir.join(format!("{stem}_mask.png"));
    if mask.is_file() {
        Ok(mask)
    } else {
        Err(Error::input(
            image,
            format!(
                "no mask; expected {} (MVTec AD naming: <image stem>_mask.png)",
                mask.display()
            ),
        ))
    }
}

/// Image files directly inside `dir`, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut images = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && is_image_name(&path) {
            images.push(path);
        }
    }
    images.sort();
    Ok(images)
}

/// True when the file name has an image ending and is not hidden.
pub fn is_image_name(path: &Path) -> bool {
    let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    !hidden && extension.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Sub-folder names of `dir` (not hidden), sorted.
fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    #[test]
    fn mvtec_layout_pairs_masks_by_stem() {
        let dir = tempfile::tempdir().unwrap();
        let cat = dir.path().join("bottle");
        touch(&cat.join("train/good/000.png"));
        touch(&cat.join("train/good/notes.txt"));
        touch(&cat.join("test/good/000.png"));
        touch(&cat.join("test/crack/001.png"));
        touch(&cat.join("ground_truth/crack/001_mask.png"));
        let category = Category::discover(dir.path(), "bottle").unwrap();
        assert_eq!(category.layout, Layout::Mvtec);
        assert_eq!(category.training_good().len(), 1);
        assert_eq!(category.test_samples().len(), 2);
        let crack = category.samples.iter().find(|s| s.defect_type == "crack").unwrap();
        assert_eq!(
            crack.mask.as_deref(),
            Some(cat.join("ground_truth/crack/001_mask.png").as_path())
        );
    }

    #[test]
    fn missing_mask_names_the_expected_file() {
        let dir = tempfile::tempdir().unwrap();
        let cat = dir.path().join("c");
        touch(&cat.join("train/good/a.png"));
        touch(&cat.join("test/hole/7.png"));
        fs::create_dir_all(cat.join("ground_truth/hole")).unwrap();
        let message = Category::discover(dir.path(), "c").unwrap_err().to_string();
        assert!(message.contains("7_mask.png"), "{message}");
    }

    #[test]
    fn simple_layout_and_unknown_layout() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("s/good/a.jpg"));
        touch(&dir.path().join("s/bad/b.JPG"));
        let category = Category::discover(dir.path(), "s").unwrap();
        assert_eq!(category.layout, Layout::Simple);
        assert_eq!(category.samples.len(), 2);
        assert!(category.samples[1].is_defective());
        touch(&dir.path().join("odd/images/a.png"));
        let message = Category::discover(dir.path(), "odd").unwrap_err().to_string();
        assert!(message.contains("unknown layout"), "{message}");
    }

    #[test]
    fn missing_category_lists_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("wood/good/a.png"));
        let message = Category::discover(dir.path(), "metal").unwrap_err().to_string();
        assert!(message.contains("no such category") && message.contains("wood"), "{message}");
        assert!(Category::discover(dir.path(), "../x").is_err());
    }
}
