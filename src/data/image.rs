//! Decodes any image the `image` crate reads and turns it into a normalised CHW float array.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};

use crate::error::{Error, Result};

/// How an image is brought to the network's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    /// Resize straight to the input size (what the Python peer does; distorts non-square images).
    Squash,
    /// Scale the short side to the input size and the long side in proportion (rounded to a
    /// multiple of 32, the network's stride), so long inspection strips keep their shape.
    Keep,
    /// Per image: `Keep` when its long side is more than [`AUTO_KEEP_RATIO`] times its short
    /// side, else `Squash`. Decided from each image's own size, so `score` and `heatmap` decide
    /// exactly as `fit` did, with nothing but the rule stored.
    Auto,
}

/// `--aspect auto` keeps an image's shape when its long side exceeds this multiple of its short.
pub const AUTO_KEEP_RATIO: f64 = 1.5;

impl Aspect {
    /// What this aspect does to an image of `width × height` pixels: `Squash` or `Keep`.
    pub fn resolve(self, width: u32, height: u32) -> Aspect {
        match self {
            Aspect::Auto => {
                let (long, short) = (width.max(height) as f64, width.min(height).max(1) as f64);
                if long > AUTO_KEEP_RATIO * short {
                    Aspect::Keep
                } else {
                    Aspect::Squash
                }
            }
            fixed => fixed,
        }
    }
}

/// Input size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputSize {
    pub width: u32,
    pub height: u32,
}

impl std::str::FromStr for InputSize {
    type Err = Error;

    /// `N` (square) or `WxH`, each between 32 and 4096.
    fn from_str(text: &str) -> Result<Self> {
        let parse = |part: &str| -> Result<u32> {
            let value: u32 = part.trim().parse().map_err(|_| {
                Error::param("--size", format!("'{text}' is not N or WxH (e.g. 224 or 576x224)"))
            })?;
            if !(32..=4096).contains(&value) {
                return Err(Error::param("--size", format!("{value} is outside 32..=4096 pixels")));
            }
            Ok(value)
        };
        match text.split_once(['x', 'X']) {
            Some((w, h)) => Ok(InputSize { width: parse(w)?, height: parse(h)? }),
            None => {
                let side = parse(text)?;
                Ok(InputSize { width: side, height: side })
            }
        }
    }
}

impl std::fmt::Display for InputSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Everything needed to turn an image file into network input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    pub size: InputSize,
    pub aspect: Aspect,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A decoded, resized and normalised image: `3 × height × width` floats, channel-major.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    pub width: u32,
    pub height: u32,
    pub chw: Vec<f32>,
}

impl Preprocess {
    /// The network input size for an image of `width × height` pixels.
    pub fn target_size(&self, width: u32, height: u32) -> InputSize {
        match self.aspect.resolve(width, height) {
            Aspect::Squash | Aspect::Auto => self.size,
            Aspect::Keep => {
                let short = self.size.width.min(self.size.height) as f64;
                let scale = short / width.min(height).max(1) as f64;
                let round = |side: u32| (((side as f64 * scale) / 32.0).round() as u32).max(1) * 32;
                InputSize { width: round(width), height: round(height) }
            }
        }
    }

    /// Decodes `path` and prepares it for the network.
    pub fn prepare(&self, path: &Path) -> Result<PreparedImage> {
        let image = decode(path)?;
        Ok(self.prepare_decoded(&image))
    }

    /// Resizes (bilinear, antialiased when shrinking, as PIL does) and normalises.
    pub fn prepare_decoded(&self, image: &DynamicImage) -> PreparedImage {
        let target = self.target_size(image.width(), image.height());
        let (width, height) = (target.width, target.height);
        let plane = (width * height) as usize;
        let mut chw = vec![0f32; 3 * plane];
        // 8-bit sources are resized as bytes (fast); deeper ones as floats to keep their precision.
        let is_deep = !matches!(
            image,
            DynamicImage::ImageLuma8(_)
                | DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageRgb8(_)
                | DynamicImage::ImageRgba8(_)
        );
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / self.std[c]);
        if is_deep {
            let rgb = image.to_rgb32f();
            let resized = image::imageops::resize(&rgb, width, height, FilterType::Triangle);
            for (i, pixel) in resized.pixels().enumerate() {
                for c in 0..3 {
                    chw[c * plane + i] = (pixel.0[c] - self.mean[c]) * scale[c];
                }
            }
        } else if let DynamicImage::ImageLuma8(grey) = image {
            // Grey: resize the one channel, then copy it into R, G and B (a third of the work
            // of resizing the RGB conversion, and the same result).
            let resized = if (grey.width(), grey.height()) == (width, height) {
                grey.clone()
            } else {
                image::imageops::resize(grey, width, height, FilterType::Triangle)
            };
            for (i, pixel) in resized.pixels().enumerate() {
                let value = pixel.0[0] as f32 / 255.0;
                for c in 0..3 {
                    chw[c * plane + i] = (value - self.mean[c]) * scale[c];
                }
            }
        } else {
            let rgb = image.to_rgb8();
            let resized = if (rgb.width(), rgb.height()) == (width, height) {
                rgb
            } else {
                image::imageops::resize(&rgb, width, height, FilterType::Triangle)
            };
            for (i, pixel) in resized.pixels().enumerate() {
                for c in 0..3 {
                    chw[c * plane + i] = (pixel.0[c] as f32 / 255.0 - self.mean[c]) * scale[c];
                }
            }
        }
        PreparedImage { width, height, chw }
    }
}

/// Reads and decodes an image file; the error names the file and says what is wrong with it.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(path, bytes)
}

/// Decodes the bytes of an image file read from `path` (named in errors).
pub fn decode_bytes(path: &Path, bytes: Vec<u8>) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(Error::input(path, "empty file (0 bytes)"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::input(path, "not an image (unrecognised file format)"));
    }
    let image = reader
        .decode()
        .map_err(|e| Error::input(path, format!("corrupt or truncated image: {e}")))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::input(path, "image has no pixels"));
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};

    fn preprocess(aspect: Aspect) -> Preprocess {
        Preprocess {
            size: InputSize { width: 64, height: 64 },
            aspect,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    #[test]
    fn size_parses_square_and_rectangle_and_rejects_nonsense() {
        assert_eq!("224".parse::<InputSize>().unwrap(), InputSize { width: 224, height: 224 });
        assert_eq!("576x224".parse::<InputSize>().unwrap(), InputSize { width: 576, height: 224 });
        assert!("0".parse::<InputSize>().is_err());
        assert!("abc".parse::<InputSize>().is_err());
        assert!("99999".parse::<InputSize>().is_err());
    }

    #[test]
    fn keep_aspect_scales_the_short_side() {
        let p = preprocess(Aspect::Keep);
        assert_eq!(p.target_size(1260, 500), InputSize { width: 160, height: 64 });
        assert_eq!(preprocess(Aspect::Squash).target_size(1260, 500), p.size);
    }

    #[test]
    fn auto_keeps_only_images_longer_than_one_and_a_half_times_their_width() {
        let auto = preprocess(Aspect::Auto);
        // Long strips, either way round: kept (short side 64, long side in proportion).
        assert_eq!(Aspect::Auto.resolve(1260, 500), Aspect::Keep);
        assert_eq!(auto.target_size(1260, 500), InputSize { width: 160, height: 64 });
        assert_eq!(Aspect::Auto.resolve(100, 151), Aspect::Keep);
        assert_eq!(auto.target_size(100, 300), InputSize { width: 64, height: 192 });
        // Exactly 1.5, near-square and square: squashed to the input size.
        for (w, h) in [(150, 100), (100, 150), (130, 100), (300, 300), (1, 1)] {
            assert_eq!(Aspect::Auto.resolve(w, h), Aspect::Squash, "{w}x{h}");
            assert_eq!(auto.target_size(w, h), auto.size, "{w}x{h}");
        }
        // The fixed aspects ignore the image's shape.
        assert_eq!(Aspect::Squash.resolve(1260, 500), Aspect::Squash);
        assert_eq!(Aspect::Keep.resolve(300, 300), Aspect::Keep);
    }

    #[test]
    fn aspect_reads_and_writes_as_in_model_json() {
        for (aspect, text) in
            [(Aspect::Squash, "\"squash\""), (Aspect::Keep, "\"keep\""), (Aspect::Auto, "\"auto\"")]
        {
            assert_eq!(serde_json::to_string(&aspect).unwrap(), text);
            assert_eq!(serde_json::from_str::<Aspect>(text).unwrap(), aspect);
        }
    }

    #[test]
    fn gray_becomes_three_equal_channels_normalised() {
        let gray = GrayImage::from_pixel(64, 64, Luma([255]));
        let prepared = preprocess(Aspect::Squash).prepare_decoded(&DynamicImage::ImageLuma8(gray));
        assert_eq!(prepared.chw.len(), 3 * 64 * 64);
        assert!(prepared.chw.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn grey_resize_equals_resizing_its_rgb_conversion() {
        let grey = GrayImage::from_fn(97, 61, |x, y| Luma([((x * 7 + y * 3) % 256) as u8]));
        let p = preprocess(Aspect::Squash);
        let fast = p.prepare_decoded(&DynamicImage::ImageLuma8(grey.clone()));
        let rgb = DynamicImage::ImageLuma8(grey).to_rgb8();
        let reference = p.prepare_decoded(&DynamicImage::ImageRgb8(rgb));
        assert_eq!(fast.chw, reference.chw);
    }

    #[test]
    fn sixteen_bit_keeps_its_range() {
        let deep: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(8, 8, Rgb([0, 32768, 65535]));
        let prepared = preprocess(Aspect::Squash).prepare_decoded(&DynamicImage::ImageRgb16(deep));
        let plane = 64 * 64;
        assert!((prepared.chw[0] + 1.0).abs() < 1e-4);
        assert!(prepared.chw[plane].abs() < 1e-3);
        assert!((prepared.chw[2 * plane] - 1.0).abs() < 1e-4);
    }

    #[test]
    fn bad_files_get_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        fs::write(&empty, b"").unwrap();
        assert!(decode(&empty).unwrap_err().to_string().contains("empty file"));
        let text = dir.path().join("text.png");
        fs::write(&text, b"hello, not an image").unwrap();
        assert!(decode(&text).unwrap_err().to_string().contains("not an image"));
        let good = dir.path().join("good.png");
        RgbImage::from_pixel(32, 32, Rgb([1, 2, 3])).save(&good).unwrap();
        let bytes = fs::read(&good).unwrap();
        let cut = dir.path().join("cut.png");
        fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        assert!(decode(&cut).unwrap_err().to_string().contains("corrupt or truncated"));
    }
}
