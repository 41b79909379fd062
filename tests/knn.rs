//! The knn (patch memory) scorer through the Scorer seam: fit, score, eval and heatmap end to
//! end, the run folder round trip, old run folders, and its bad flags.

mod common;

use std::fs;

use anodet::features::FeatureSpec;
use anodet::model::RunModel;
use anodet::pipeline::fit::{fit, FitParams};
use anodet::progress::Silent;
use anodet::scorer::{KnnParams, ScorerSpec};
use anodet::threshold::QuantileThreshold;
use common::Workspace;

#[test]
fn a_knn_run_survives_save_and_load_and_scores_identically() {
    let ws = Workspace::new();
    let spec = ScorerSpec::Knn(KnnParams { coreset: 0.25, border: 1, seed: 3 });
    let features = FeatureSpec {
        backbone: "efficientnet_lite0".into(),
        levels: spec.default_levels(),
        size: Some("64".parse().unwrap()),
        aspect: anodet::data::image::Aspect::Squash,
    };
    let params = FitParams {
        data_root: ws.data(),
        category: "wood".into(),
        features: features.clone(),
        scorer: spec.clone(),
        threshold: QuantileThreshold::default(),
        out: ws.path().join("runs/knn"),
        runs_root: ws.path().join("runs"),
        tuned: None,
    };
    let runtime = common::cpu_runtime(8);
    let report = fit(&params, &runtime, &Silent).unwrap();
    assert_eq!(report.scorer, spec);
    // 16 good images × a 4×4 grid at 64 px, a quarter kept.
    assert_eq!(report.bank_rows, Some(64));

    let loaded = RunModel::load(&ws.path().join("runs/knn")).unwrap();
    assert_eq!(loaded.meta.scorer, spec);
    assert!(loaded.meta.gaussians.is_empty());

    // The same fit in memory, on the same images, scores the test images exactly as the
    // stored run does.
    let (train_embeddings, test_embeddings, test) =
        common::wood_patch_embeddings(&ws, &runtime, &features);
    let fresh = spec.scorer().unwrap().fit(&train_embeddings).unwrap();
    let expected = fresh.score(&test_embeddings).unwrap();
    let stored = loaded.scorer.score(&test_embeddings).unwrap();
    assert_eq!(expected, stored);
    assert!(stored.iter().all(|s| s.is_finite() && *s >= 0.0));

    // `anodet score` on the run gives the same numbers (printed with 6 decimals).
    let mut args = vec!["score", "--model", "runs/knn"];
    let test_names: Vec<String> = test.iter().map(|p| p.display().to_string()).collect();
    args.extend(test_names.iter().map(String::as_str));
    let run = ws.anodet(&args);
    assert!(run.code() == 0 || run.code() == 1, "{}", run.stderr());
    let printed = common::printed_scores(&run.stdout());
    assert_eq!(printed.len(), stored.len());
    for (p, s) in printed.iter().zip(&stored) {
        assert!((p - s).abs() <= 1e-4 * s.max(1.0), "{p} vs {s}");
    }
}

#[test]
fn knn_through_the_cli_fit_eval_and_heatmap() {
    let ws = Workspace::new();
    let stdout =
        ws.anodet(&["fit", "--category", "wood", "--scorer", "knn", "--out", "runs/k"]).ok();
    assert!(stdout.contains("scorer knn") && stdout.contains("memory bank"), "{stdout}");
    let model: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("runs/k/model.json")).unwrap())
            .unwrap();
    assert_eq!(model["scorer"]["kind"], "knn");
    assert_eq!(model["scorer"]["coreset"], 0.1);
    assert_eq!(model["levels"], serde_json::json!([6, 7]));

    let stdout = ws
        .anodet(&[
            "eval",
            "--category",
            "wood",
            "--data",
            "data",
            "--scorer",
            "knn",
            "--json",
            "--out",
            "ev",
        ])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["scorer"]["kind"], "knn");
    let auc = report["runs"][0]["auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc), "{auc}");
    assert!(ws.path().join("ev/scores.csv").is_file());

    // A knn run draws its own position scores by default, and the score printed with the map
    // is the run's score.
    let image = "data/wood/test/hole/000.png";
    let drawn = ws.anodet(&["heatmap", "--model", "runs/k", "--out", "maps", image]).ok();
    assert!(ws.path().join("maps/hole-000.png").is_file(), "{drawn}");
    assert!(ws.path().join("runs/k/heatmap-knn.json").is_file());
    let scored = ws.anodet(&["score", "--model", "runs/k", image]);
    let score: f64 = scored.stdout().split('\t').nth(1).unwrap().parse().unwrap();
    let drawn_score: f64 = drawn.split('\t').nth(1).unwrap().parse().unwrap();
    assert!((drawn_score - score).abs() <= 1e-3 * score.max(1.0), "{drawn} vs {score}");
    // Gradient maps need a Gaussian run.
    ws.anodet(&["heatmap", "--model", "runs/k", "--method", "gradient", image])
        .fails_with(&["--method", "gradient"]);

    // A Gaussian run offers knn maps too (a bank fitted on its training images).
    ws.anodet(&["fit", "--category", "wood", "--out", "runs/g"]).ok();
    ws.anodet(&["heatmap", "--model", "runs/g", "--method", "knn", "--out", "gmaps", image]).ok();
    assert!(ws.path().join("gmaps/hole-000.png").is_file());
}

#[test]
fn an_old_run_without_a_scorer_loads_as_gaussian() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood"]).ok();
    let image = "data/wood/test/good/000.png";
    let before = ws.anodet(&["score", image]).stdout();
    let path = ws.path().join("runs/wood/model.json");
    let mut model: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    model.as_object_mut().unwrap().remove("scorer");
    fs::write(&path, model.to_string()).unwrap();
    assert_eq!(ws.anodet(&["score", image]).stdout(), before);
    assert_eq!(
        RunModel::load(&ws.path().join("runs/wood")).unwrap().meta.scorer,
        ScorerSpec::Gaussian
    );
}

#[test]
fn bad_knn_flags_name_the_flag_and_write_nothing() {
    let ws = Workspace::new();
    for (args, flag) in [
        (vec!["--scorer", "knn", "--coreset", "0"], "--coreset"),
        (vec!["--scorer", "knn", "--coreset", "1.5"], "--coreset"),
        (vec!["--coreset", "0.5"], "--coreset"),
        (vec!["--border", "1"], "--border"),
        // At 64 px level 6 is a 4×4 grid: two rings leave nothing.
        (vec!["--scorer", "knn", "--border", "2"], "--border"),
    ] {
        let mut full = vec!["fit", "--category", "wood"];
        full.extend(args);
        ws.anodet(&full).fails_with(&[flag]);
    }
    // Only complete feature-cache entries may exist (the border is checked against the grid the
    // network gives): no run folder, no staging leftovers.
    let cache = ws.path().join("runs/cache");
    let written: Vec<_> = ws.run_files().into_iter().filter(|f| !f.starts_with(&cache)).collect();
    assert!(written.is_empty(), "{written:?}");
    if let Ok(entries) = fs::read_dir(ws.path().join("runs")) {
        let names: Vec<_> =
            entries.map(|e| e.unwrap().file_name()).filter(|n| n != "cache").collect();
        assert!(names.is_empty(), "{names:?}");
    }
    ws.anodet(&[
        "eval",
        "--category",
        "wood",
        "--data",
        "data",
        "--scorer",
        "knn",
        "--coreset",
        "0",
        "--out",
        "e",
    ])
    .fails_with(&["--coreset"]);
    assert!(!ws.path().join("e").exists());
}
