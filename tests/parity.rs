//! Parity with the Python peer (scripts/reference.py: PIL, sklearn LedoitWolf):
//! identical features give identical scores, and end to end on a real category the AUC agrees.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use anodet::backbone::Levels;
use anodet::features::FeatureSet;
use anodet::gaussian::{GaussianParams, MultiLevelGaussian};
use common::Workspace;
use ndarray::Array2;

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference.py")
}

/// Reads a float32 or float64 2-D (or 1-D) .npy file.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let data = &bytes[10 + header_len..];
    let values = if header.contains("<f4") {
        data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
    } else {
        assert!(header.contains("<f8"), "{header}");
        data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    };
    (shape, values)
}

fn feature_set(path: &Path, levels: &Levels, widths: &[usize]) -> FeatureSet {
    let (shape, values) = read_npy(path);
    let mut start = 0;
    let per_level = widths
        .iter()
        .map(|&w| {
            let m = Array2::from_shape_fn((shape[0], w), |(i, j)| {
                values[i * shape[1] + start + j] as f32
            });
            start += w;
            m
        })
        .collect();
    FeatureSet { paths: vec![PathBuf::new(); shape[0]], levels: levels.clone(), per_level }
}

#[test]
fn identical_features_give_the_python_peers_scores() {
    let ws = Workspace::new();
    for (split, file) in [("train", "fit.npy"), ("test", "test.npy")] {
        ws.anodet(&[
            "features",
            "--category",
            "wood",
            "--data",
            "data",
            "--split",
            split,
            "--levels",
            "6,7",
            "--size",
            "64",
            "--out",
            file,
        ])
        .ok();
    }
    let status = Command::new(python())
        .current_dir(ws.path())
        .arg(reference())
        .args([
            "score-features",
            "--fit",
            "fit.npy",
            "--score",
            "test.npy",
            "--meta",
            "fit.npy.json",
            "--out",
            "scores.npy",
        ])
        .status()
        .expect("python");
    assert!(status.success());
    let levels = Levels::new(vec![6, 7]).unwrap();
    let widths = [112, 192];
    let fit = feature_set(&ws.path().join("fit.npy"), &levels, &widths);
    let judged = feature_set(&ws.path().join("test.npy"), &levels, &widths);
    let ours =
        MultiLevelGaussian::fit(&fit, &GaussianParams::new()).unwrap().score(&judged).unwrap();
    let (_, theirs) = read_npy(&ws.path().join("scores.npy"));
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "anodet {a} vs sklearn {b}");
    }
}

#[test]
fn end_to_end_auc_matches_the_python_peer_on_real_data() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if !data.join("magnetic-tile").is_dir() {
        eprintln!(
            "skipped: {} not found (the end-to-end parity check needs ../shared/data)",
            data.display()
        );
        return;
    }
    let ws = Workspace::new();
    let data_arg = data.to_str().unwrap();
    ws.anodet(&[
        "eval",
        "--data",
        data_arg,
        "--category",
        "magnetic-tile",
        "--protocol",
        "mvtec",
        "--size",
        "224",
        "--out",
        "e",
    ])
    .ok();
    let ours: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("e/metrics.json")).unwrap())
            .unwrap();
    let output = Command::new(python())
        .arg(reference())
        .args([
            "eval",
            "--data",
            data_arg,
            "--category",
            "magnetic-tile",
            "--protocol",
            "mvtec",
            "--model",
        ])
        .arg(common::models_dir().join("efficientnet_lite0.pt"))
        .output()
        .expect("python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let theirs: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    let (a, b) = (ours["runs"][0]["auc"].as_f64().unwrap(), theirs["auc"].as_f64().unwrap());
    eprintln!("image AUC: anodet {a:.4} ({}), Python peer {b:.4} (fp32, PIL)", ours["precision"]);
    assert!((a - b).abs() <= 0.005, "anodet {a} vs Python peer {b}");
}
