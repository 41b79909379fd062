//! Every verb end to end through the binary: exit codes, stdout vs stderr, files written.

mod common;

use common::Workspace;

#[test]
fn fit_then_score_flags_defects_and_reuses_the_latest_run() {
    let ws = Workspace::new();
    let fit = ws.anodet(&["fit", "--category", "wood", "--data", "data"]).ok();
    assert!(fit.contains("fitted runs/wood on 16 good images"), "{fit}");
    for file in ["model.json", "model.safetensors", "fit.json"] {
        assert!(ws.path().join("runs/wood").join(file).is_file(), "{file} missing");
    }
    let latest = std::fs::read_to_string(ws.path().join("runs/latest")).unwrap();
    assert!(latest.trim().ends_with("runs/wood"), "{latest}");

    // Good test images only: exit 0 unless one is over the threshold.
    let goods: Vec<String> = (0..4).map(|i| format!("data/wood/test/good/{i:03}.png")).collect();
    let mut args = vec!["score"];
    args.extend(goods.iter().map(String::as_str));
    let good_run = ws.anodet(&args);
    let good_out = good_run.stdout();
    assert_eq!(good_out.lines().count(), 4, "{good_out}");
    let flagged = good_out.lines().filter(|l| l.ends_with("anomalous")).count();
    assert_eq!(good_run.code(), if flagged > 0 { 1 } else { 0 });

    // Defects (JSON lines): most are flagged, and the exit status says so.
    let holes: Vec<String> = (0..3).map(|i| format!("data/wood/test/hole/{i:03}.png")).collect();
    let mut args = vec!["score", "--json"];
    args.extend(holes.iter().map(String::as_str));
    let run = ws.anodet(&args);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let rows: Vec<serde_json::Value> =
        run.stdout().lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        for key in ["path", "score", "threshold", "anomalous"] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
    }
    let hole_mean = rows.iter().map(|r| r["score"].as_f64().unwrap()).sum::<f64>() / 3.0;
    let good_mean = good_out
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().parse::<f64>().unwrap())
        .sum::<f64>()
        / 4.0;
    assert!(hole_mean > good_mean, "holes {hole_mean} vs good {good_mean}");
    assert!(run.stderr().is_empty(), "{}", run.stderr());
}

#[test]
fn score_threshold_override_and_explicit_model() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood", "--out", "runs/custom"]).ok();
    let image = "data/wood/test/good/000.png";
    let high = ws.anodet(&["score", "--model", "runs/custom", "--threshold", "1e9", image]);
    assert_eq!(high.code(), 0);
    assert!(high.stdout().trim_end().ends_with("good"));
    let low = ws.anodet(&["score", "--model", "runs/custom", "--threshold", "0", image]);
    assert_eq!(low.code(), 1);
    assert!(low.stdout().trim_end().ends_with("anomalous"));
}

#[test]
fn several_levels_simple_layout_and_kept_aspect() {
    let ws = Workspace::new();
    // Simple layout: good/ and bad/, with non-square images.
    let simple = ws.data().join("strips");
    for (folder, source) in [("good", "train/good"), ("bad", "test/hole")] {
        std::fs::create_dir_all(simple.join(folder)).unwrap();
        for entry in std::fs::read_dir(ws.data().join("wood").join(source)).unwrap() {
            let path = entry.unwrap().path();
            let image = image::open(&path).unwrap();
            let strip = image::imageops::resize(
                &image.to_rgb8(),
                192,
                64,
                image::imageops::FilterType::Triangle,
            );
            strip.save(simple.join(folder).join(path.file_name().unwrap())).unwrap();
        }
    }
    let fit = ws
        .anodet(&["fit", "--category", "strips", "--levels", "6,7,8", "--aspect", "keep", "--json"])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&fit).unwrap();
    assert_eq!(report["levels"], serde_json::json!([6, 7, 8]));
    assert_eq!(report["layout"], "simple");
    let model: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("runs/strips/model.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(model["preprocess"]["aspect"], "keep");
    assert_eq!(model["gaussians"].as_array().unwrap().len(), 3);
    let run = ws.anodet(&["score", "data/strips/bad/000.png", "data/strips/good/000.png"]);
    assert!(run.code() < 2, "{}", run.stderr());
    assert_eq!(run.stdout().lines().count(), 2);
}

#[test]
fn synth_is_deterministic_and_help_has_examples() {
    let ws = Workspace::new();
    for category in ["a", "b"] {
        let args = ["synth", "--category", category, "--size", "64", "--train-good", "2"];
        ws.anodet(&[&args[..], &["--test-good", "1", "--per-defect", "1"]].concat()).ok();
    }
    let a = std::fs::read(ws.data().join("a/test/stain/000.png")).unwrap();
    let b = std::fs::read(ws.data().join("b/test/stain/000.png")).unwrap();
    assert_eq!(a, b);
    for verb in ["fit", "score", "eval", "heatmap", "features", "synth", "serve"] {
        let help = ws.anodet(&[verb, "--help"]).ok();
        assert!(help.contains("EXAMPLES") && help.contains("EXIT STATUS"), "{verb}: {help}");
    }
}

#[test]
fn auto_aspect_is_stored_per_image_and_bf16_serves_other_sizes() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood", "--aspect", "auto"]).ok();
    let model: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("runs/wood/model.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(model["preprocess"]["aspect"], "auto");
    // A long strip (3:1) is kept, a square tile squashed: auto gives the same features as those.
    let tile = ws.data().join("wood/test/hole/000.png");
    let strip = ws.path().join("strip.png");
    image::imageops::resize(
        &image::open(&tile).unwrap().to_rgb8(),
        192,
        64,
        image::imageops::FilterType::Triangle,
    )
    .save(&strip)
    .unwrap();
    let features = |image: &std::path::Path, aspect: &str| {
        let out = ws
            .path()
            .join(format!("{aspect}-{}.npy", image.file_stem().unwrap().to_str().unwrap()));
        ws.anodet(&[
            "features",
            "--size",
            "64",
            "--aspect",
            aspect,
            "--no-cache",
            "--out",
            out.to_str().unwrap(),
            image.to_str().unwrap(),
        ])
        .ok();
        std::fs::read(out).unwrap()
    };
    assert_eq!(features(&strip, "auto"), features(&strip, "keep"));
    assert_ne!(features(&strip, "auto"), features(&strip, "squash"));
    assert_eq!(features(&tile, "auto"), features(&tile, "squash"));
    // bf16 used to be refused at any size but the backbone's own (224 px), and with keep.
    for aspect in ["squash", "auto"] {
        let out = ws.path().join(format!("bf16-{aspect}.npy"));
        let args = ["features", "--size", "64", "--aspect", aspect, "--precision", "bf16"];
        let more = ["--no-cache", "--out", out.to_str().unwrap(), strip.to_str().unwrap()];
        ws.anodet(&[&args[..], &more[..]].concat()).ok();
        let sidecar = std::fs::read_to_string(out.with_extension("npy.json")).unwrap();
        assert!(sidecar.contains("bf16"), "{sidecar}");
    }
    // score reproduces the run's per-image choice: the strip is scored, not refused.
    let run = ws.anodet(&["score", "--json", strip.to_str().unwrap(), tile.to_str().unwrap()]);
    assert!(run.code() < 2, "{}", run.stderr());
    assert_eq!(run.stdout().lines().count(), 2);
}
