//! The padim scorer (a Gaussian per grid position) end to end: fit, score, eval with its review
//! page, heatmap, an ensemble member's map, the run folder round trip, and its bad flags.

mod common;

use std::fs;

use anodet::features::FeatureSpec;
use anodet::model::RunModel;
use anodet::scorer::{PadimParams, ScorerSpec};
use common::{largest_standardised_gap, printed_scores as scores, read_npy_values, Workspace};

#[test]
fn padim_fits_scores_evaluates_and_maps_through_the_cli() {
    let ws = Workspace::new();
    let stdout =
        ws.anodet(&["fit", "--category", "wood", "--scorer", "padim", "--out", "runs/p"]).ok();
    assert!(stdout.contains("scorer padim"), "{stdout}");
    let model: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("runs/p/model.json")).unwrap())
            .unwrap();
    assert_eq!(model["scorer"]["kind"], "padim");
    assert_eq!(model["scorer"]["border"], 1);
    // padim's own default levels (knn's are 6,7).
    assert_eq!(model["levels"], serde_json::json!([5, 6, 7]));

    // The stored run scores the test images exactly as the same fit in memory does, and
    // `anodet score` prints those scores.
    let run = RunModel::load(&ws.path().join("runs/p")).unwrap();
    let spec = ScorerSpec::Padim(PadimParams::default());
    assert_eq!(run.meta.scorer, spec);
    let runtime = common::cpu_runtime(8);
    let features = FeatureSpec {
        backbone: run.meta.backbone.name.clone(),
        levels: run.meta.levels.clone(),
        size: Some(run.meta.preprocess.size),
        aspect: run.meta.preprocess.aspect,
    };
    let (train_embeddings, test_embeddings, test) =
        common::wood_patch_embeddings(&ws, &runtime, &features);
    let fresh = spec.scorer().unwrap().fit(&train_embeddings).unwrap();
    let expected = fresh.score(&test_embeddings).unwrap();
    assert_eq!(run.scorer.score(&test_embeddings).unwrap(), expected);
    let mut args = vec!["score", "--model", "runs/p"];
    let names: Vec<String> = test.iter().map(|p| p.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let printed = scores(&ws.anodet(&args).stdout());
    assert_eq!(printed.len(), expected.len());
    for (p, e) in printed.iter().zip(&expected) {
        assert!((p - e).abs() <= 1e-4 * e.max(1.0), "{p} vs {e}");
    }

    // Eval, with its review page drawn by the fold models' own position scores.
    let stdout = ws
        .anodet(&[
            "eval",
            "--category",
            "wood",
            "--data",
            "data",
            "--scorer",
            "padim",
            "--json",
            "--out",
            "ev",
        ])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["scorer"]["kind"], "padim");
    let auc = report["runs"][0]["auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc), "{auc}");
    let page = fs::read_to_string(ws.path().join("ev/report.html")).unwrap();
    assert!(page.contains("padim position scores"), "the page names its maps");

    // A padim run draws its own position scores by default; the score printed with the map is
    // the run's. A Gaussian run offers padim maps too, fitted on its training images.
    let image = "data/wood/test/hole/000.png";
    let drawn = ws.anodet(&["heatmap", "--model", "runs/p", "--out", "maps", image]).ok();
    assert!(ws.path().join("maps/hole-000.png").is_file(), "{drawn}");
    assert!(ws.path().join("runs/p/heatmap-padim.json").is_file());
    let drawn_score: f64 = drawn.split('\t').nth(1).unwrap().parse().unwrap();
    let scored = scores(&ws.anodet(&["score", "--model", "runs/p", image]).stdout())[0];
    assert!((drawn_score - scored).abs() <= 1e-3 * scored.max(1.0), "{drawn} vs {scored}");
    ws.anodet(&["heatmap", "--model", "runs/p", "--method", "gradient", image])
        .fails_with(&["--method", "padim"]);
    ws.anodet(&["fit", "--category", "wood", "--out", "runs/g"]).ok();
    ws.anodet(&["heatmap", "--model", "runs/g", "--method", "padim", "--out", "g", image]).ok();
    assert!(ws.path().join("g/hole-000.png").is_file());
    // That map model takes padim's default levels, and its stored colour scale says so: a scale
    // stored without them (as before the default changed) is measured again, not reused.
    let scale_file = ws.path().join("runs/g/heatmap-padim.json");
    let read_scale =
        || serde_json::from_str::<serde_json::Value>(&fs::read_to_string(&scale_file).unwrap());
    let measured = read_scale().unwrap();
    assert_eq!(measured["position_levels"], serde_json::json!([[5, 6, 7]]));
    let mut older = measured.clone();
    older.as_object_mut().unwrap().remove("position_levels");
    older["low"] = serde_json::json!(1000.0);
    older["high"] = serde_json::json!(1001.0);
    fs::write(&scale_file, older.to_string()).unwrap();
    ws.anodet(&["heatmap", "--model", "runs/g", "--method", "padim", "--out", "g", image]).ok();
    assert_eq!(read_scale().unwrap(), measured);

    // A run made on other levels (as before padim's default changed) keeps them: it reads, scores
    // and maps with the levels it recorded.
    ws.anodet(&[
        "fit",
        "--category",
        "wood",
        "--scorer",
        "padim",
        "--levels",
        "6,7",
        "--out",
        "runs/p67",
    ])
    .ok();
    let older = RunModel::load(&ws.path().join("runs/p67")).unwrap();
    assert_eq!(older.meta.levels.as_slice(), &[6, 7]);
    // Level 5's channels are what the default adds.
    assert!(older.scorer.padim().unwrap().dim() < run.scorer.padim().unwrap().dim());
    let older_score = scores(&ws.anodet(&["score", "--model", "runs/p67", image]).stdout())[0];
    assert!(older_score.is_finite() && (older_score - scored).abs() > 1e-3, "{older_score}");
    ws.anodet(&["heatmap", "--model", "runs/p67", "--out", "maps67", image]).ok();
    assert!(ws.path().join("maps67/hole-000.png").is_file());
}

#[test]
fn an_ensemble_maps_with_its_padim_member_standardised() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood", "--scorer", "padim", "--out", "runs/p"]).ok();
    ws.anodet(&[
        "fit",
        "--category",
        "wood",
        "--scorer",
        "ensemble",
        "--member",
        "padim",
        "--member",
        "gaussian:7",
        "--out",
        "runs/e",
    ])
    .ok();
    let image = "data/wood/test/hole/000.png";
    ws.anodet(&["heatmap", "--model", "runs/p", "--out", "p", image]).ok();
    let drawn = ws.anodet(&["heatmap", "--model", "runs/e", "--out", "e", image]).ok();
    let run = RunModel::load(&ws.path().join("runs/e")).unwrap();
    let member = &run.scorer.ensemble().unwrap().members()[0];
    assert!(member.scorer.padim().is_some());
    let plain = read_npy_values(&ws.path().join("p/hole-000.npy"));
    let combined = read_npy_values(&ws.path().join("e/hole-000.npy"));
    assert_eq!(plain.len(), combined.len());
    // The member's Gaussians are the plain run's (same features and settings), so the
    // ensemble's map is the plain map standardised as the member's score is.
    let largest_gap = largest_standardised_gap(&plain, &combined, member.centre, member.spread);
    assert!(largest_gap < 1e-4, "largest relative gap {largest_gap}");
    assert!(combined.iter().any(|&c| (c - combined[0]).abs() > 1e-3), "a flat map");
    // The score drawn with it is the ensemble's, its Gaussian member included.
    let drawn_score: f64 = drawn.split('\t').nth(1).unwrap().parse().unwrap();
    let scored = scores(&ws.anodet(&["score", "--model", "runs/e", image]).stdout())[0];
    assert!((drawn_score - scored).abs() <= 1e-3 * scored.abs().max(1.0), "{drawn} vs {scored}");
}

#[test]
fn bad_padim_flags_name_the_flag_and_write_nothing() {
    let ws = Workspace::new();
    for (args, flag) in [
        (vec!["--scorer", "padim", "--coreset", "0.5"], "--coreset"),
        // At 64 px level 6 is a 4×4 grid: two rings leave nothing.
        (vec!["--scorer", "padim", "--border", "2"], "--border"),
        (vec!["--scorer", "padim", "--grid", "4"], "--grid"),
    ] {
        let mut full = vec!["fit", "--category", "wood"];
        full.extend(args);
        ws.anodet(&full).fails_with(&[flag]);
    }
    let cache = ws.path().join("runs/cache");
    let written: Vec<_> = ws.run_files().into_iter().filter(|f| !f.starts_with(&cache)).collect();
    assert!(written.is_empty(), "{written:?}");
    ws.anodet(&["fit", "--category", "wood", "--scorer", "ensemble", "--member", "padim:x"])
        .fails_with(&["--member", "padim:x"]);
}
