//! Decodes image files and turns them into normalised CHW float arrays at the network's size.
//!
//! JPEG goes through libjpeg-turbo (`turbojpeg`), decoded at a reduced scale in the DCT (1/2, 1/4
//! or 1/8) when the network input is that much smaller, as PIL's `draft()` does; every other
//! format, and any JPEG libjpeg-turbo refuses or warns about, goes through the `image` crate at
//! full size. Resizing is `fast_image_resize`'s convolution with the bilinear (triangle) filter
//! whose support widens when shrinking, the same filter as PIL's `BILINEAR` and `image`'s
//! `Triangle`. Grey images stay one channel until the network input, where the channel is
//! copied into R, G and B. EXIF orientation is not applied (neither did the `image` crate's
//! decoding before, nor does the Python peer): pixels are taken as stored.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use fast_image_resize::images::Image as ResizeImage;
use fast_image_resize::{FilterType, IntoImageView, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageReader, Limits};

use crate::error::{Error, Result};

/// Names how images become network input (decoders, DCT scaling, resizer); part of the feature
/// cache's key, so features prepared another way are never mixed with these.
pub const PREPARATION: &str = "libjpeg-turbo dct-scaled, fast_image_resize bilinear (1)";

/// The largest decoded image accepted, in bytes (the `image` crate's default allocation limit):
/// 512 MiB is 178 megapixels of RGB8, far above any inspection camera. Checked against the header
/// before any pixel buffer is allocated.
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

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

/// How a JPEG is reduced in the DCT before resizing: the denominator of the scale (1, 2, 4, 8).
///
/// The smallest scale that still leaves at least the target size in both directions, so the
/// resize after it always shrinks (or keeps) and never enlarges.
pub fn jpeg_scale_denominator(width: u32, height: u32, target: InputSize) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|&d| width.div_ceil(d) >= target.width && height.div_ceil(d) >= target.height)
        .unwrap_or(1)
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

    /// Reads `path` and prepares it for the network (JPEG decoded at a reduced scale when the
    /// network input is much smaller; see [`Preprocess::prepare_bytes`]).
    pub fn prepare(&self, path: &Path) -> Result<PreparedImage> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        self.prepare_bytes(path, &bytes)
    }

    /// Prepares the bytes of an image file read from `path` (named in errors) for the network.
    ///
    /// The fast path: a JPEG is decoded by libjpeg-turbo at the smallest DCT scale (1/8, 1/4,
    /// 1/2) that leaves at least the target size (see [`jpeg_scale_denominator`]), then resized;
    /// anything else is decoded in full by [`decode_bytes`] and resized by
    /// [`Preprocess::prepare_decoded`]. For a JPEG that needs no reduction the result equals
    /// full decoding with libjpeg-turbo (the decoder PIL uses).
    pub fn prepare_bytes(&self, path: &Path, bytes: &[u8]) -> Result<PreparedImage> {
        if bytes.starts_with(&[0xFF, 0xD8]) {
            if let Some(prepared) = self.prepare_jpeg(path, bytes) {
                return prepared;
            }
        }
        let image = decode_slice(path, bytes)?;
        Ok(self.prepare_decoded(&image))
    }

    /// Decodes a JPEG with libjpeg-turbo, scaled in the DCT, and prepares it. A file that ends
    /// before its image data does is an error. `None` when libjpeg-turbo cannot decode it
    /// cleanly for another reason (CMYK, 12-bit, a warning about damaged data, …): the caller
    /// then decodes it in full with the `image` crate, which reports real damage.
    fn prepare_jpeg(&self, path: &Path, bytes: &[u8]) -> Option<Result<PreparedImage>> {
        use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};
        let mut decompressor = Decompressor::new().ok()?;
        let header = decompressor.read_header(bytes).ok()?;
        let (format, channels) = match header.colorspace {
            Colorspace::Gray => (PixelFormat::GRAY, 1),
            Colorspace::YCbCr | Colorspace::RGB => (PixelFormat::RGB, 3),
            _ => return None,
        };
        let (width, height) = (header.width as u32, header.height as u32);
        if let Err(e) = check_size(path, width, height, channels) {
            return Some(Err(e));
        }
        if width == 0 || height == 0 {
            return Some(Err(Error::input(path, "image has no pixels")));
        }
        let target = self.target_size(width, height);
        let denominator =
            if header.is_lossless { 1 } else { jpeg_scale_denominator(width, height, target) };
        let factor = ScalingFactor::new(1, denominator as usize);
        decompressor.set_scaling_factor(factor).ok()?;
        let scaled = header.scaled(factor);
        let pitch = scaled.width * channels as usize;
        let mut pixels = vec![0u8; pitch * scaled.height];
        let image = turbojpeg::Image {
            pixels: pixels.as_mut_slice(),
            width: scaled.width,
            pitch,
            height: scaled.height,
            format,
        };
        match decompressor.decompress(bytes, image) {
            Ok(()) => {}
            // A file cut short: refused (the `image` crate's decoder would fill the missing rows
            // with grey and score a part nobody saw).
            Err(e) if e.to_string().contains("Premature end") => {
                return Some(Err(Error::input(
                    path,
                    "corrupt or truncated image: premature end of JPEG data",
                )))
            }
            Err(_) => return None,
        }
        let pixel_type = if channels == 1 { PixelType::U8 } else { PixelType::U8x3 };
        let source =
            ResizeImage::from_vec_u8(scaled.width as u32, scaled.height as u32, pixels, pixel_type)
                .ok()?;
        Some(Ok(self.resize_and_normalise(&source, target)))
    }

    /// Resizes (bilinear, antialiased when shrinking, as PIL does) and normalises an image that
    /// is already decoded in full.
    pub fn prepare_decoded(&self, image: &DynamicImage) -> PreparedImage {
        let target = self.target_size(image.width(), image.height());
        // One channel for grey, three for colour; alpha is dropped (not composited), as before.
        // 8-bit stays 8-bit; 16-bit stays 16-bit; float stays float.
        match image {
            DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgb32F(_) => self.resize_and_normalise(image, target),
            DynamicImage::ImageLumaA8(_) => {
                self.resize_and_normalise(&DynamicImage::ImageLuma8(image.to_luma8()), target)
            }
            DynamicImage::ImageLumaA16(_) => {
                self.resize_and_normalise(&DynamicImage::ImageLuma16(image.to_luma16()), target)
            }
            DynamicImage::ImageRgba16(_) => {
                self.resize_and_normalise(&DynamicImage::ImageRgb16(image.to_rgb16()), target)
            }
            DynamicImage::ImageRgba32F(_) => {
                self.resize_and_normalise(&DynamicImage::ImageRgb32F(image.to_rgb32f()), target)
            }
            _ => self.resize_and_normalise(&DynamicImage::ImageRgb8(image.to_rgb8()), target),
        }
    }

    /// Resizes a grey or RGB image (8-bit, 16-bit or float) to `target` and normalises it into
    /// CHW floats; a grey channel is copied into all three.
    fn resize_and_normalise(
        &self,
        source: &impl IntoImageView,
        target: InputSize,
    ) -> PreparedImage {
        let pixel_type = source.pixel_type().unwrap_or(PixelType::U8x3);
        let mut resized = ResizeImage::new(target.width, target.height, pixel_type);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        if let Err(e) = Resizer::new().resize(source, &mut resized, &options) {
            // Only reachable through a programming error (pixel types are matched above).
            unreachable!("resize of a {pixel_type:?} image failed: {e}");
        }
        let (channels, full_scale) = match pixel_type {
            PixelType::U8 => (1, 255.0),
            PixelType::U8x3 => (3, 255.0),
            PixelType::U16 => (1, 65535.0),
            PixelType::U16x3 => (3, 65535.0),
            PixelType::F32 => (1, 1.0),
            _ => (3, 1.0),
        };
        let values: Vec<f32> = match pixel_type {
            PixelType::U8 | PixelType::U8x3 => {
                resized.buffer().iter().map(|&v| v as f32 / full_scale).collect()
            }
            PixelType::U16 | PixelType::U16x3 => resized
                .buffer()
                .chunks_exact(2)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]) as f32 / full_scale)
                .collect(),
            _ => resized
                .buffer()
                .chunks_exact(4)
                .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        };
        let plane = (target.width * target.height) as usize;
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / self.std[c]);
        let mut chw = vec![0f32; 3 * plane];
        for (i, pixel) in values.chunks_exact(channels).enumerate() {
            for c in 0..3 {
                let value = pixel[c.min(channels - 1)];
                chw[c * plane + i] = (value - self.mean[c]) * scale[c];
            }
        }
        PreparedImage { width: target.width, height: target.height, chw }
    }
}

fn too_large(path: &Path, width: u64, height: u64, channels: u64) -> Error {
    let mib = width.saturating_mul(height).saturating_mul(channels) >> 20;
    Error::input(
        path,
        format!(
            "image too large: {width}x{height} pixels would take {mib} MiB decoded (at most {} MiB)",
            MAX_DECODED_BYTES >> 20
        ),
    )
}

/// Refuses, from the header alone, an image whose decoded pixels would exceed
/// [`MAX_DECODED_BYTES`].
fn check_size(path: &Path, width: u32, height: u32, channels: u64) -> Result<()> {
    if width as u64 * height as u64 * channels > MAX_DECODED_BYTES {
        return Err(too_large(path, width as u64, height as u64, channels));
    }
    Ok(())
}

/// Reads and decodes an image file in full; the error names the file and says what is wrong.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(path, bytes)
}

/// Decodes the bytes of an image file read from `path` (named in errors), in full, with the
/// `image` crate.
pub fn decode_bytes(path: &Path, bytes: Vec<u8>) -> Result<DynamicImage> {
    decode_slice(path, &bytes)
}

/// [`decode_bytes`] of borrowed bytes.
pub fn decode_slice(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(Error::input(path, "empty file (0 bytes)"));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::input(path, "not an image (unrecognised file format)"));
    }
    // The decoders check the header's size against this before allocating the pixels.
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => Error::input(
            path,
            format!("image too large: over {} MiB decoded", MAX_DECODED_BYTES >> 20),
        ),
        e => Error::input(path, format!("corrupt or truncated image: {e}")),
    })?;
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
    fn jpeg_scale_leaves_at_least_the_target_size() {
        let square = InputSize { width: 224, height: 224 };
        assert_eq!(jpeg_scale_denominator(2448, 2048, square), 8);
        assert_eq!(jpeg_scale_denominator(1792, 1792, square), 8);
        assert_eq!(jpeg_scale_denominator(1785, 1792, square), 8); // ceil(1785 / 8) = 224
        assert_eq!(jpeg_scale_denominator(1784, 1792, square), 4);
        assert_eq!(jpeg_scale_denominator(900, 900, square), 4);
        assert_eq!(jpeg_scale_denominator(500, 448, square), 2);
        assert_eq!(jpeg_scale_denominator(447, 900, square), 2);
        assert_eq!(jpeg_scale_denominator(446, 900, square), 1);
        assert_eq!(jpeg_scale_denominator(224, 224, square), 1);
        assert_eq!(jpeg_scale_denominator(100, 100, square), 1);
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
