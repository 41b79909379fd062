//! Overlay images: the original under a semi-transparent colour map of the anomaly map, with a
//! colour bar that states the run's fixed scale.

use image::{imageops, DynamicImage, GrayImage, Rgb, RgbImage};
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::pipeline::heatmap::MapScale;

const BAR_WIDTH: u32 = 190;
const CAPTION_HEIGHT: u32 = 36;
const MIN_HEIGHT: u32 = 260;

/// Colour for a normalised anomaly level in [0, 1]: blue → cyan → yellow → red.
pub fn colour(t: f32) -> [f32; 3] {
    const STOPS: [(f32, [f32; 3]); 5] = [
        (0.0, [40.0, 60.0, 200.0]),
        (0.3, [0.0, 190.0, 230.0]),
        (0.55, [120.0, 220.0, 60.0]),
        (0.8, [255.0, 200.0, 0.0]),
        (1.0, [230.0, 20.0, 20.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    for pair in STOPS.windows(2) {
        let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            return std::array::from_fn(|i| c0[i] + (c1[i] - c0[i]) * f);
        }
    }
    STOPS[4].1
}

/// Normalised level of a map value under the run's scale.
pub fn level(value: f32, scale: &MapScale) -> f32 {
    ((value - scale.low) / (scale.high - scale.low)).clamp(0.0, 1.0)
}

/// The original image with the map blended in: transparent at or below the scale's low end,
/// up to 65% opaque at its high end. `mask`, when given, is outlined in white.
pub fn blend(
    image: &DynamicImage,
    map: &[f32],
    scale: &MapScale,
    mask: Option<&GrayImage>,
) -> RgbImage {
    let mut out = image.to_rgb8();
    let width = out.width();
    for (i, pixel) in out.pixels_mut().enumerate() {
        let t = level(map.get(i).copied().unwrap_or(0.0), scale);
        let alpha = 0.65 * t.powf(0.8);
        let c = colour(t);
        for (channel, target) in pixel.0.iter_mut().zip(c) {
            *channel = (*channel as f32 * (1.0 - alpha) + target * alpha).round() as u8;
        }
    }
    if let Some(mask) = mask {
        let mask = imageops::resize(mask, out.width(), out.height(), imageops::FilterType::Nearest);
        let inside = |x: i64, y: i64| {
            x >= 0
                && y >= 0
                && (x as u32) < width
                && (y as u32) < mask.height()
                && mask.get_pixel(x as u32, y as u32).0[0] > 127
        };
        for y in 0..out.height() as i64 {
            for x in 0..width as i64 {
                if inside(x, y)
                    && (!inside(x - 1, y)
                        || !inside(x + 1, y)
                        || !inside(x, y - 1)
                        || !inside(x, y + 1))
                {
                    out.put_pixel(x as u32, y as u32, Rgb([255, 255, 255]));
                }
            }
        }
    }
    out
}

/// The overlay with a caption above and a colour bar to the right, as a finished picture.
pub fn with_colour_bar(blended: &RgbImage, scale: &MapScale, caption: &str) -> Result<RgbImage> {
    let (w, h) = (blended.width() + BAR_WIDTH, blended.height().max(MIN_HEIGHT) + CAPTION_HEIGHT);
    let mut canvas = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    imageops::replace(&mut canvas, blended, 0, CAPTION_HEIGHT as i64);
    super::plots::register_font();
    {
        let mut raw = canvas.as_flat_samples_mut();
        let buffer = raw.as_mut_slice();
        let area = BitMapBackend::with_buffer(buffer, (w, h)).into_drawing_area();
        let draw = || -> std::result::Result<(), String> {
            let text = |size: u32| ("sans-serif", size).into_font().color(&BLACK);
            area.draw_text(caption, &text(17), (8, 9)).map_err(|e| e.to_string())?;
            let (x0, top) = (blended.width() as i32 + 18, CAPTION_HEIGHT as i32 + 24);
            let bar_height = (h as i32 - top - 70).max(60);
            for row in 0..bar_height {
                let t = 1.0 - row as f32 / (bar_height - 1) as f32;
                let c = colour(t);
                let color = RGBColor(c[0] as u8, c[1] as u8, c[2] as u8);
                area.draw(&Rectangle::new(
                    [(x0, top + row), (x0 + 22, top + row + 1)],
                    color.filled(),
                ))
                .map_err(|e| e.to_string())?;
            }
            area.draw(&Rectangle::new([(x0, top), (x0 + 22, top + bar_height)], BLACK))
                .map_err(|e| e.to_string())?;
            let label_x = x0 + 28;
            area.draw_text(&format!("{:.3}", scale.high), &text(14), (label_x, top - 2))
                .map_err(|e| e.to_string())?;
            area.draw_text("99.9% of good", &text(12), (label_x, top + 14))
                .map_err(|e| e.to_string())?;
            area.draw_text("and above", &text(12), (label_x, top + 28))
                .map_err(|e| e.to_string())?;
            let bottom = top + bar_height;
            area.draw_text(&format!("{:.3}", scale.low), &text(14), (label_x, bottom - 40))
                .map_err(|e| e.to_string())?;
            area.draw_text("median of good:", &text(12), (label_x, bottom - 24))
                .map_err(|e| e.to_string())?;
            area.draw_text("transparent", &text(12), (label_x, bottom - 10))
                .map_err(|e| e.to_string())?;
            area.draw_text("scale: good training", &text(11), (x0 - 6, bottom + 16))
                .map_err(|e| e.to_string())?;
            area.draw_text("images of this run", &text(11), (x0 - 6, bottom + 30))
                .map_err(|e| e.to_string())?;
            area.present().map_err(|e| e.to_string())
        };
        draw().map_err(|e| Error::numeric("overlay", e))?;
    }
    Ok(canvas)
}

/// Places pictures side by side (top-aligned, white background).
pub fn side_by_side(pictures: &[RgbImage]) -> RgbImage {
    let width: u32 = pictures.iter().map(|p| p.width()).sum();
    let height = pictures.iter().map(|p| p.height()).max().unwrap_or(1);
    let mut canvas = RgbImage::from_pixel(width.max(1), height, Rgb([255, 255, 255]));
    let mut x = 0;
    for picture in pictures {
        imageops::replace(&mut canvas, picture, x, 0);
        x += picture.width() as i64;
    }
    canvas
}

/// Stacks rows of pictures (left-aligned, white background).
pub fn stacked(rows: &[RgbImage]) -> RgbImage {
    let width = rows.iter().map(|p| p.width()).max().unwrap_or(1);
    let height = rows.iter().map(|p| p.height()).sum::<u32>().max(1);
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut y = 0;
    for row in rows {
        imageops::replace(&mut canvas, row, 0, y);
        y += row.height() as i64;
    }
    canvas
}

/// Encodes a picture as PNG bytes.
pub fn png(picture: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::numeric("png", e.to_string()))?;
    Ok(bytes)
}
