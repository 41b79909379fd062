//! Synthetic defects painted onto good images, for choosing a pipeline when a category has too
//! few real defects (`anodet tune`). The painted kinds are those `anodet synth` draws (scratch,
//! hole, stain) plus a patch cut from another good image and pasted elsewhere, a local blur and a
//! local brightness change. Every kind changes pixels inside its mask only.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, RgbImage};

use crate::data::synth::paint_defect;
use crate::error::{Error, Result};
use crate::report::atomic;
use crate::rng::Rng;

/// The kinds painted, in the order they are assigned to images.
pub const SYNTHETIC_KINDS: &[&str] =
    &["scratch", "hole", "stain", "cut_paste", "blur", "brightness"];

/// Paints a defect of `kind` onto a copy of `image` (`donor`: the good image a cut-paste patch
/// comes from) and returns the painted image and its mask (255 = painted).
pub fn paint(
    image: &RgbImage,
    donor: &RgbImage,
    kind: &str,
    rng: &mut Rng,
) -> Result<(RgbImage, GrayImage)> {
    let (width, height) = image.dimensions();
    if width < 8 || height < 8 {
        return Err(Error::param("synthetic defects", "images must be at least 8×8 pixels"));
    }
    let mut painted = image.clone();
    let mask = match kind {
        "scratch" | "hole" | "stain" => paint_defect(&mut painted, kind, false, rng),
        "cut_paste" => cut_paste(&mut painted, donor, rng),
        "blur" => {
            let (mask, radius) = (disc(width, height, rng), (width.min(height) / 64).max(2));
            let blurred = box_blur(image, radius);
            copy_where(&mut painted, &blurred, &mask);
            mask
        }
        "brightness" => {
            let mask = disc(width, height, rng);
            let factor = if rng.unit() < 0.5 { rng.range(0.55, 0.75) } else { rng.range(1.3, 1.5) };
            for (x, y, pixel) in painted.enumerate_pixels_mut() {
                if mask.get_pixel(x, y).0[0] > 0 {
                    for channel in pixel.0.iter_mut() {
                        *channel = (*channel as f64 * factor).clamp(0.0, 255.0) as u8;
                    }
                }
            }
            mask
        }
        other => {
            return Err(Error::param(
                "synthetic defects",
                format!("unknown kind '{other}'; expected one of {}", SYNTHETIC_KINDS.join(", ")),
            ))
        }
    };
    Ok((painted, mask))
}

/// A filled disc of radius 6–12% of the short side, centred in the middle half of the image.
fn disc(width: u32, height: u32, rng: &mut Rng) -> GrayImage {
    let short = width.min(height) as f64;
    let radius = rng.range(0.06, 0.12) * short;
    let (cx, cy) = (rng.range(0.25, 0.75) * width as f64, rng.range(0.25, 0.75) * height as f64);
    GrayImage::from_fn(width, height, |x, y| {
        let inside = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2) <= radius * radius;
        Luma([if inside { 255 } else { 0 }])
    })
}

/// Copies a rectangle of `donor` (10–25% of the short side a side) to a random place of `image`.
fn cut_paste(image: &mut RgbImage, donor: &RgbImage, rng: &mut Rng) -> GrayImage {
    let (width, height) = image.dimensions();
    let mut mask = GrayImage::new(width, height);
    let short = width.min(height).min(donor.width()).min(donor.height()) as f64;
    let side = |rng: &mut Rng| ((rng.range(0.10, 0.25) * short) as u32).max(2);
    let (pw, ph) = (side(rng), side(rng));
    let (sx, sy) = (
        rng.below((donor.width() - pw + 1) as usize) as u32,
        rng.below((donor.height() - ph + 1) as usize) as u32,
    );
    let (dx, dy) =
        (rng.below((width - pw + 1) as usize) as u32, rng.below((height - ph + 1) as usize) as u32);
    for y in 0..ph {
        for x in 0..pw {
            image.put_pixel(dx + x, dy + y, *donor.get_pixel(sx + x, sy + y));
            mask.put_pixel(dx + x, dy + y, Luma([255]));
        }
    }
    mask
}

/// A box blur of `radius` pixels (edges clamped).
fn box_blur(image: &RgbImage, radius: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    let r = radius as i64;
    RgbImage::from_fn(width, height, |x, y| {
        let mut sums = [0u32; 3];
        let mut count = 0u32;
        for yy in (y as i64 - r)..=(y as i64 + r) {
            for xx in (x as i64 - r)..=(x as i64 + r) {
                let (cx, cy) =
                    (xx.clamp(0, width as i64 - 1) as u32, yy.clamp(0, height as i64 - 1) as u32);
                let pixel = image.get_pixel(cx, cy);
                for (sum, &value) in sums.iter_mut().zip(pixel.0.iter()) {
                    *sum += value as u32;
                }
                count += 1;
            }
        }
        image::Rgb(sums.map(|s| (s / count) as u8))
    })
}

fn copy_where(image: &mut RgbImage, source: &RgbImage, mask: &GrayImage) {
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        if mask.get_pixel(x, y).0[0] > 0 {
            *pixel = *source.get_pixel(x, y);
        }
    }
}

/// A painted image written to disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PaintedImage {
    pub path: PathBuf,
    pub mask: PathBuf,
    pub source: PathBuf,
    pub kind: String,
}

/// Paints one defect onto each of `sources` (kinds in turn; the cut-paste donor is the next
/// source) and writes image and mask under `dir` (`<kind>/NNN.png`, `masks/<kind>/NNN.png`).
/// Grey sources stay grey. Deterministic for a seed.
pub fn paint_files(sources: &[PathBuf], dir: &Path, seed: u64) -> Result<Vec<PaintedImage>> {
    let mut rng = Rng::new(seed);
    let read = |path: &Path| -> Result<(RgbImage, bool)> {
        let decoded =
            image::open(path).map_err(|e| Error::input(path, format!("cannot read image: {e}")))?;
        let grey = !decoded.color().has_color();
        Ok((decoded.to_rgb8(), grey))
    };
    let mut painted = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        let kind = SYNTHETIC_KINDS[i % SYNTHETIC_KINDS.len()];
        let (image, grey) = read(source)?;
        let donor = match sources.get((i + 1) % sources.len()) {
            Some(other) if sources.len() > 1 => read(other)?.0,
            _ => image.clone(),
        };
        let (result, mask) = paint(&image, &donor, kind, &mut rng)?;
        let path = dir.join(kind).join(format!("{i:03}.png"));
        let mask_path = dir.join("masks").join(kind).join(format!("{i:03}.png"));
        for folder in [path.parent(), mask_path.parent()].into_iter().flatten() {
            std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        }
        let bytes = if grey {
            encode_png(&image::DynamicImage::ImageRgb8(result).to_luma8(), &path)?
        } else {
            encode_png(&result, &path)?
        };
        atomic::write_file(&path, &bytes)?;
        atomic::write_file(&mask_path, &encode_png(&mask, &mask_path)?)?;
        painted.push(PaintedImage {
            path,
            mask: mask_path,
            source: source.clone(),
            kind: kind.to_string(),
        });
    }
    Ok(painted)
}

fn encode_png<P, C>(picture: &image::ImageBuffer<P, C>, path: &Path) -> Result<Vec<u8>>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut bytes = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::input(path, format!("cannot encode: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(width: u32, height: u32, seed: u64) -> RgbImage {
        let mut rng = Rng::new(seed);
        RgbImage::from_fn(width, height, |_, _| {
            image::Rgb([rng.below(256) as u8, rng.below(256) as u8, rng.below(256) as u8])
        })
    }

    #[test]
    fn painting_never_touches_pixels_outside_the_mask() {
        for (seed, (width, height)) in [(128, 128), (160, 96), (96, 200)].into_iter().enumerate() {
            let image = textured(width, height, seed as u64);
            let donor = textured(width, height, 100 + seed as u64);
            for kind in SYNTHETIC_KINDS {
                let mut rng = Rng::new(seed as u64);
                let (painted, mask) = paint(&image, &donor, kind, &mut rng).unwrap();
                assert_eq!(mask.dimensions(), image.dimensions(), "{kind}");
                let mut inside_changed = 0;
                for (x, y, original) in image.enumerate_pixels() {
                    let after = painted.get_pixel(x, y);
                    if mask.get_pixel(x, y).0[0] == 0 {
                        assert_eq!(original, after, "{kind} changed ({x}, {y}) outside its mask");
                    } else if original != after {
                        inside_changed += 1;
                    }
                }
                assert!(inside_changed > 0, "{kind} {width}x{height} painted nothing");
            }
        }
    }

    #[test]
    fn unknown_kinds_and_tiny_images_are_errors() {
        let image = textured(32, 32, 0);
        assert!(paint(&image, &image, "smudge", &mut Rng::new(0)).is_err());
        let tiny = textured(4, 4, 0);
        assert!(paint(&tiny, &tiny, "blur", &mut Rng::new(0)).is_err());
    }
}
