//! `anodet heatmap` end to end on generated data: overlays, raw maps, level comparison, the
//! fixed scale, pixel-level evaluation against masks, bad input.

mod common;

use std::fs;

use common::Workspace;

fn read_npy_shape(path: &std::path::Path) -> (usize, usize, usize) {
    let bytes = fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    let shape = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let dims: Vec<usize> = shape.split(',').filter_map(|d| d.trim().parse().ok()).collect();
    (dims[0], dims[1], (bytes.len() - 10 - header_len) / 4)
}

#[test]
fn overlays_raw_maps_and_a_level_comparison() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood"]).ok();
    let images = ["data/wood/test/hole/000.png", "data/wood/test/good/000.png"];
    let stdout = ws.anodet(&["heatmap", "--out", "maps", images[0], images[1]]).ok();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.lines().next().unwrap().contains("maps/hole-000.png"));
    let overlay = image::open(ws.path().join("maps/hole-000.png")).unwrap();
    assert!(
        overlay.width() > 96 && overlay.height() >= 96,
        "overlay with colour bar: {}x{}",
        overlay.width(),
        overlay.height()
    );
    let (h, w, n) = read_npy_shape(&ws.path().join("maps/hole-000.npy"));
    assert_eq!((h, w, n), (96, 96, 96 * 96), "the raw map has the image's size");
    // The fixed scale was measured once and stored with the run.
    assert!(ws.path().join("runs/wood/heatmap-patch.json").is_file());
    assert!(ws.path().join("runs/wood/heatmap-patch.safetensors").is_file());

    // Levels 2, 4 and 7 side by side, in one picture, with one raw map per level.
    ws.anodet(&[
        "heatmap", "--method", "feature", "--levels", "2,4,7", "--out", "levels", images[0],
    ])
    .ok();
    for level in [2, 4, 7] {
        assert!(
            ws.path().join(format!("levels/hole-000-featurelevel{level}.npy")).is_file(),
            "level {level}"
        );
    }
    let panel = image::open(ws.path().join("levels/hole-000.png")).unwrap();
    assert!(panel.width() >= 3 * overlay.width() - 10, "three tiles side by side");
}

#[test]
fn the_defect_is_where_the_map_is_high() {
    let ws = Workspace::with_images(24, 4, 4);
    ws.anodet(&["fit", "--category", "wood", "--size", "128"]).ok();
    let stdout = ws.anodet(&["heatmap", "--eval", "--out", "eval"]).ok();
    assert!(stdout.contains("pixel AUC") && stdout.contains("PRO(30%)"), "{stdout}");
    let reports: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(ws.path().join("eval/pixel-metrics.json")).unwrap(),
    )
    .unwrap();
    let report = &reports[0];
    assert_eq!(report["method"], "patch");
    assert_eq!(report["images"], 4 + 3 * 4);
    let auc = report["pixel_auc"].as_f64().unwrap();
    assert!(auc > 0.85, "holes, scratches and stains should light up: pixel AUC {auc}");
    for defect in ["hole", "scratch", "stain"] {
        assert!(report["pixel_auc_per_defect_type"][defect].is_number(), "{defect}");
    }
    assert!(report["pro_30"].as_f64().unwrap() > 0.5);
    assert!(ws.path().join("eval/gallery-patch.png").is_file());
}

#[test]
fn heatmap_bad_input() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood"]).ok();
    fs::write(ws.path().join("broken.png"), b"not a png").unwrap();
    let run = ws.anodet(&["heatmap", "--out", "maps", "data/wood/test/good/000.png", "broken.png"]);
    assert_eq!(run.code(), 2);
    assert_eq!(run.stdout().lines().count(), 1, "the readable image is still drawn");
    assert!(run.stderr().contains("anodet: broken.png: not an image"), "{}", run.stderr());
    ws.anodet(&["fit", "--category", "wood", "--aspect", "keep", "--out", "runs/keep"]).ok();
    ws.anodet(&["heatmap", "--model", "runs/keep", "data/wood/test/good/000.png"])
        .fails_with(&["--method", "--aspect squash"]);
    ws.anodet(&["heatmap", "--levels", "12", "x.png"])
        .0
        .status
        .code()
        .filter(|&c| c == 2)
        .expect("bad level exits 2");
}
