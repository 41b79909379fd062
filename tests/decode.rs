//! The front end at camera resolution: a JPEG decoded at a reduced DCT scale gives the same
//! network input as full decoding + resizing (within the tolerance stated below), the SIMD
//! resizer matches the `image` crate's triangle filter that anodet used before, 16-bit TIFF and
//! grey images still work, and damaged or huge images fail with one error naming the file.
//!
//! The photographs are scikit-image's (in the project's .venv, from scripts/setup.sh), enlarged
//! to camera sizes and encoded here with libjpeg-turbo in each subsampling mode.

mod common;

use std::path::Path;

use anodet::data::image::{
    decode_bytes, jpeg_scale_denominator, Aspect, InputSize, PreparedImage, Preprocess,
};
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
use turbojpeg::{Compressor, PixelFormat, Subsamp};

/// Scaled vs full JPEG decoding, in pixel units (0..1) of the network input: the mean absolute
/// difference over all values, and the 99.9th percentile of the absolute difference. The DCT
/// scale averages 8×8 (4×4, 2×2) blocks before the bilinear filter, which is slightly blurrier
/// than the bilinear filter alone; on photographs that stays well under 1% of the range on
/// average and under 8% at the sharpest edges.
const SCALED_MEAN: f32 = 0.01;
const SCALED_P999: f32 = 0.08;

/// New resizer vs the `image` crate's `Triangle` on 8-bit input: both compute PIL's filter, in
/// fixed point (new) or f32 (old), so values differ by at most one level of 255 from rounding.
const RESIZER_MAX: f32 = 1.0 / 255.0 + 1e-6;

/// A photograph enlarged (Lanczos) to `width × height`, as a camera of that size would see it.
fn photo(name: &str, width: u32, height: u32) -> RgbImage {
    let rgb = image::open(common::skimage_photo(name)).unwrap().to_rgb8();
    image::imageops::resize(&rgb, width, height, FilterType::Lanczos3)
}

fn encode(
    pixels: &[u8],
    width: u32,
    height: u32,
    grey: bool,
    mode: Subsamp,
    progressive: bool,
) -> Vec<u8> {
    let format = if grey { PixelFormat::GRAY } else { PixelFormat::RGB };
    let image = turbojpeg::Image {
        pixels,
        width: width as usize,
        pitch: width as usize * format.size(),
        height: height as usize,
        format,
    };
    let mut compressor = Compressor::new().unwrap();
    compressor.set_quality(95).unwrap();
    compressor.set_subsamp(mode).unwrap();
    compressor.set_progressive(progressive).unwrap();
    compressor.compress_to_vec(image).unwrap()
}

/// Inserts an EXIF APP1 segment with the given orientation tag right after the SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08"); // big-endian TIFF, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut segment = b"Exif\x00\x00".to_vec();
    segment.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((segment.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&segment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn preprocess(width: u32, height: u32, aspect: Aspect) -> Preprocess {
    Preprocess { size: InputSize { width, height }, aspect, mean: [0.5; 3], std: [0.5; 3] }
}

/// Absolute differences between two network inputs, in pixel units (the inputs are normalised
/// with std 0.5, so one pixel unit is 2.0 there), sorted.
fn differences(a: &PreparedImage, b: &PreparedImage) -> Vec<f32> {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let mut diff: Vec<f32> = a.chw.iter().zip(&b.chw).map(|(x, y)| (x - y).abs() * 0.5).collect();
    diff.sort_by(f32::total_cmp);
    diff
}

fn mean(values: &[f32]) -> f32 {
    values.iter().sum::<f32>() / values.len() as f32
}

fn quantile(sorted: &[f32], q: f64) -> f32 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Scaled decoding through `prepare_bytes` vs full decoding (`image` crate) + resize.
fn scaled_vs_full(name: &str, bytes: &[u8], p: &Preprocess) -> (f32, f32) {
    let path = Path::new(name);
    let scaled = p.prepare_bytes(path, bytes).unwrap();
    let full = p.prepare_decoded(&decode_bytes(path, bytes.to_vec()).unwrap());
    let diff = differences(&scaled, &full);
    let (m, q) = (mean(&diff), quantile(&diff, 0.999));
    eprintln!("{name}: mean {m:.4}, p99.9 {q:.4}, max {:.4}", diff[diff.len() - 1]);
    (m, q)
}

#[test]
fn scaled_jpeg_decoding_matches_full_decoding_on_photographs() {
    let p224 = preprocess(224, 224, Aspect::Squash);
    // (photo, camera size, network input): sizes that decode at 1/8, 1/4 and 1/2.
    let cases = [
        ("chelsea.png", (2448, 2048), &p224, 8),
        ("coffee.png", (1600, 1200), &p224, 4),
        ("astronaut.png", (1000, 800), &p224, 2),
        ("rocket.jpg", (4000, 1000), &preprocess(224, 224, Aspect::Keep), 4),
    ];
    let mut worst = (0f32, 0f32);
    for (name, (width, height), p, expected) in cases {
        let target = p.target_size(width, height);
        assert_eq!(jpeg_scale_denominator(width, height, target), expected, "{name}");
        let rgb = photo(name, width, height);
        let grey = DynamicImage::ImageRgb8(rgb.clone()).to_luma8();
        let variants = [
            ("4:4:4", encode(&rgb, width, height, false, Subsamp::None, false)),
            ("4:2:0", encode(&rgb, width, height, false, Subsamp::Sub2x2, false)),
            ("4:2:2 progressive", encode(&rgb, width, height, false, Subsamp::Sub2x1, true)),
            ("grey", encode(&grey, width, height, true, Subsamp::Gray, false)),
            ("grey progressive", encode(&grey, width, height, true, Subsamp::Gray, true)),
        ];
        for (mode, bytes) in &variants {
            let (m, q) = scaled_vs_full(&format!("{name} {width}x{height} {mode}"), bytes, p);
            worst = (worst.0.max(m), worst.1.max(q));
        }
        // EXIF orientation is not applied, by either path: the tagged file gives exactly the
        // network input of the untagged one.
        let tagged = with_exif_orientation(&variants[1].1, 6);
        let (m, q) = scaled_vs_full(&format!("{name} 4:2:0 EXIF orientation 6"), &tagged, p);
        worst = (worst.0.max(m), worst.1.max(q));
        let path = Path::new("x.jpg");
        assert_eq!(
            p.prepare_bytes(path, &tagged).unwrap().chw,
            p.prepare_bytes(path, &variants[1].1).unwrap().chw
        );
    }
    eprintln!("worst: mean {:.4}, p99.9 {:.4}", worst.0, worst.1);
    assert!(worst.0 <= SCALED_MEAN && worst.1 <= SCALED_P999, "{worst:?}");
}

#[test]
fn small_jpegs_are_decoded_in_full() {
    // 400×300 → 224: no DCT scale leaves 224 rows, so the decode is full size and the result
    // equals the `image` crate's full decode up to the two decoders' IDCT rounding.
    let p = preprocess(224, 224, Aspect::Squash);
    assert_eq!(jpeg_scale_denominator(400, 300, p.size), 1);
    let rgb = photo("coffee.png", 400, 300);
    let bytes = encode(&rgb, 400, 300, false, Subsamp::Sub2x2, false);
    let (m, q) = scaled_vs_full("coffee 400x300", &bytes, &p);
    assert!(m < 0.002 && q < 0.02, "{m} {q}");
}

/// anodet's preprocessing before this change: the `image` crate's triangle filter (f32).
fn old_prepare(p: &Preprocess, image: &DynamicImage) -> PreparedImage {
    let target = p.target_size(image.width(), image.height());
    let rgb = image.to_rgb32f();
    let resized = image::imageops::resize(&rgb, target.width, target.height, FilterType::Triangle);
    let plane = (target.width * target.height) as usize;
    let mut chw = vec![0f32; 3 * plane];
    for (i, pixel) in resized.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = (pixel.0[c] - p.mean[c]) / p.std[c];
        }
    }
    PreparedImage { width: target.width, height: target.height, chw }
}

#[test]
fn the_new_resizer_matches_the_old_one() {
    let noise = |x: u32, y: u32, c: u32| ((x * 7919 + y * 104729 + c * 31) % 251) as u8;
    let rgb_noise =
        RgbImage::from_fn(333, 517, |x, y| Rgb([noise(x, y, 0), noise(x, y, 1), noise(x, y, 2)]));
    let images = [
        ("chelsea 900x600", DynamicImage::ImageRgb8(photo("chelsea.png", 900, 600))),
        (
            "camera grey",
            DynamicImage::ImageLuma8(
                image::open(common::skimage_photo("camera.png")).unwrap().to_luma8(),
            ),
        ),
        ("noise 333x517", DynamicImage::ImageRgb8(rgb_noise)),
        (
            "grey 97x61 (enlarged)",
            DynamicImage::ImageLuma8(GrayImage::from_fn(97, 61, |x, y| Luma([noise(x, y, 0)]))),
        ),
    ];
    for p in [
        preprocess(224, 224, Aspect::Squash),
        preprocess(240, 160, Aspect::Squash),
        preprocess(224, 224, Aspect::Keep),
    ] {
        for (name, image) in &images {
            let diff = differences(&p.prepare_decoded(image), &old_prepare(&p, image));
            let max = diff[diff.len() - 1];
            eprintln!("{name} → {}: mean {:.5}, max {max:.5}", p.size, mean(&diff));
            assert!(max <= RESIZER_MAX, "{name}: {max}");
        }
    }
}

#[test]
fn sixteen_bit_tiff_and_grey_images_keep_their_precision() {
    // A 16-bit ramp finer than 8 bits can hold: the network input keeps the fine steps.
    let deep: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(300, 300, |x, y| Luma([(x * 200 + y) as u16]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.tiff");
    DynamicImage::ImageLuma16(deep.clone()).save(&path).unwrap();
    let p = preprocess(224, 224, Aspect::Squash);
    let prepared = p.prepare(&path).unwrap();
    let old = old_prepare(&p, &DynamicImage::ImageLuma16(deep));
    let diff = differences(&prepared, &old);
    assert!(diff[diff.len() - 1] < 1e-4, "{}", diff[diff.len() - 1]);
    // Grey: three equal channels.
    let plane = 224 * 224;
    assert_eq!(prepared.chw[..plane], prepared.chw[plane..2 * plane]);
    assert_eq!(prepared.chw[..plane], prepared.chw[2 * plane..]);
    let distinct: std::collections::BTreeSet<u32> =
        prepared.chw[..plane].iter().map(|v| v.to_bits()).collect();
    assert!(distinct.len() > 256, "only {} distinct values", distinct.len());
}

/// A small valid JPEG whose frame header is then edited to claim `width × height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let grey = GrayImage::from_pixel(16, 16, Luma([128]));
    let mut bytes = encode(&grey, 16, 16, true, Subsamp::Gray, false);
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

#[test]
fn damaged_and_huge_images_fail_with_one_line_naming_the_file() {
    let p = preprocess(224, 224, Aspect::Squash);
    let rgb = photo("chelsea.png", 1200, 900);
    let good = encode(&rgb, 1200, 900, false, Subsamp::Sub2x2, false);
    let mut garbled = good.clone();
    let middle = garbled.len() / 2;
    garbled.truncate(middle);
    garbled.extend(std::iter::repeat_n(0xFF, 64));
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("truncated.jpg", good[..good.len() / 2].to_vec(), "corrupt or truncated"),
        ("header-only.jpg", good[..2000].to_vec(), "corrupt or truncated"),
        ("garbled.jpg", garbled, "corrupt or truncated"),
        ("huge.jpg", jpeg_claiming(60000, 60000), "image too large"),
        ("text.jpg", b"\xFF\xD8\xFF\xE0 not really a jpeg".to_vec(), "corrupt or truncated"),
    ];
    for (name, bytes, problem) in cases {
        let path = Path::new("dir").join(name);
        let started = std::time::Instant::now();
        let error = p.prepare_bytes(&path, &bytes).unwrap_err().to_string();
        eprintln!("{name}: {error} ({:?})", started.elapsed());
        assert!(error.starts_with(&format!("{}: ", path.display())), "{error}");
        assert!(error.contains(problem), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
}
