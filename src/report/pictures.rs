//! Small pictures for the review page: thumbnails and downsized overlays, as JPEG files in the
//! page's picture folder (which the caller stages and renames as a whole, so these writes are
//! plain).

use std::path::Path;

use image::{imageops, DynamicImage, RgbImage};

use crate::error::{Error, Result};

/// Longest side of a thumbnail.
pub const THUMBNAIL_SIDE: u32 = 160;
/// Longest side of an overlay on the page (shown smaller, opened full size on click).
pub const OVERLAY_SIDE: u32 = 320;

/// `image` scaled down (never up) so that its longer side is at most `side`.
pub fn shrink(image: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = (image.width().max(1), image.height().max(1));
    let scale = (side as f64 / w.max(h) as f64).min(1.0);
    if scale >= 1.0 {
        return image.clone();
    }
    let (tw, th) =
        (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    imageops::resize(image, tw, th, imageops::FilterType::Triangle)
}

/// The thumbnail of a decoded image.
pub fn thumbnail(image: &DynamicImage) -> RgbImage {
    let (w, h) = (image.width().max(1), image.height().max(1));
    if w.max(h) <= THUMBNAIL_SIDE {
        return image.to_rgb8();
    }
    // `thumbnail` averages whole source pixels: fast and clean for large reductions.
    image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE).to_rgb8()
}

/// Writes `picture` as a JPEG (quality 85) at `path`.
pub fn write_jpeg(path: &Path, picture: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
        .encode_image(picture)
        .map_err(|e| Error::input(path, format!("cannot encode JPEG: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_fit_the_side_and_keep_the_aspect() {
        let wide = DynamicImage::ImageRgb8(RgbImage::new(640, 200));
        let t = thumbnail(&wide);
        assert_eq!((t.width(), t.height()), (160, 50));
        let small = DynamicImage::ImageRgb8(RgbImage::new(90, 60));
        assert_eq!(thumbnail(&small).dimensions(), (90, 60), "never enlarged");
        assert_eq!(shrink(&RgbImage::new(100, 1000), 320).dimensions(), (32, 320));
    }
}
