//! The ensemble and HLAC subspace scorers end to end: fit, score, eval, heatmap, save/load, and
//! their bad flags.

mod common;

use std::fs;

use anodet::features::Embeddings;
use anodet::model::RunModel;
use anodet::scorer::ScorerSpec;
use common::{largest_standardised_gap, printed_scores as scores, read_npy_values, Workspace};

#[test]
fn an_ensemble_fits_scores_and_evaluates() {
    let ws = Workspace::new();
    let stdout = ws
        .anodet(&[
            "fit",
            "--category",
            "wood",
            "--scorer",
            "ensemble",
            "--member",
            "gaussian:6-8",
            "--member",
            "knn:6,7",
            "--coreset",
            "0.5",
            "--out",
            "runs/e",
        ])
        .ok();
    assert!(stdout.contains("scorer ensemble"), "{stdout}");
    let run = RunModel::load(&ws.path().join("runs/e")).unwrap();
    let ScorerSpec::Ensemble(params) = &run.meta.scorer else { panic!("not an ensemble") };
    assert_eq!(params.members.len(), 2);
    assert_eq!(run.meta.members.len(), 2);
    let ensemble = run.scorer.ensemble().unwrap();
    for member in ensemble.members() {
        assert!(member.spread > 0.0 && member.centre.is_finite());
    }
    // Standardised: good test images score around the cross-fitted good scores (sum near 0 for
    // two members), and the stored run scores the same twice.
    let images = ["data/wood/test/good/000.png", "data/wood/test/hole/000.png"];
    let first = ws.anodet(&["score", "--model", "runs/e", images[0], images[1]]);
    let second = ws.anodet(&["score", "--model", "runs/e", images[0], images[1]]);
    assert_eq!(first.stdout(), second.stdout());
    let values = scores(&first.stdout());
    assert!(values[0].abs() < 20.0, "{values:?}");

    let stdout = ws
        .anodet(&[
            "eval",
            "--category",
            "wood",
            "--data",
            "data",
            "--scorer",
            "ensemble",
            "--member",
            "gaussian:7",
            "--member",
            "knn",
            "--json",
            "--out",
            "ev",
        ])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["scorer"]["kind"], "ensemble");
    assert!(report["runs"][0]["auc"].as_f64().is_some());

    // Its map is its knn member's; the score drawn with it is the ensemble's, Gaussian member
    // included. Other map methods need a run of one scorer.
    let drawn = ws.anodet(&["heatmap", "--model", "runs/e", "--out", "maps", images[1]]).ok();
    assert!(ws.path().join("maps/hole-000.png").is_file(), "{drawn}");
    let drawn_score: f64 = drawn.split('\t').nth(1).unwrap().parse().unwrap();
    let scored = scores(&ws.anodet(&["score", "--model", "runs/e", images[1]]).stdout())[0];
    assert!((drawn_score - scored).abs() <= 1e-3 * scored.abs().max(1.0), "{drawn} vs {scored}");
    ws.anodet(&["heatmap", "--model", "runs/e", "--method", "patch", images[1]])
        .fails_with(&["--method", "knn"]);
}

#[test]
fn an_ensemble_maps_with_its_knn_members_standardised() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood", "--scorer", "knn", "--out", "runs/k"]).ok();
    let ensemble = |members: &[&str], out: &str| {
        let mut args = vec!["fit", "--category", "wood", "--scorer", "ensemble", "--out", out];
        for member in members {
            args.extend(["--member", member]);
        }
        ws.anodet(&args).ok();
    };
    ensemble(&["knn:6,7", "gaussian:7"], "runs/e");
    let image = "data/wood/test/hole/000.png";
    ws.anodet(&["heatmap", "--model", "runs/k", "--out", "k", image]).ok();
    ws.anodet(&["heatmap", "--model", "runs/e", "--out", "e", image]).ok();
    let run = RunModel::load(&ws.path().join("runs/e")).unwrap();
    let knn_member = &run.scorer.ensemble().unwrap().members()[0];
    let plain = read_npy_values(&ws.path().join("k/hole-000.npy"));
    let combined = read_npy_values(&ws.path().join("e/hole-000.npy"));
    assert_eq!(plain.len(), combined.len());
    // The member's bank is the plain knn run's (same features, settings and seed), so the
    // ensemble's map is the plain map standardised as the member's score is.
    let (centre, spread) = (knn_member.centre, knn_member.spread);
    let largest_gap = largest_standardised_gap(&plain, &combined, centre, spread);
    assert!(largest_gap < 1e-4, "largest relative gap {largest_gap}");
    assert!(combined.iter().any(|&c| (c - combined[0]).abs() > 1e-3), "a flat map");

    // An ensemble with no knn member has no map to draw.
    ensemble(&["gaussian:7"], "runs/g");
    ws.anodet(&["heatmap", "--model", "runs/g", image])
        .fails_with(&["--method", "knn or padim member"]);
}

#[test]
fn a_one_member_ensemble_ranks_like_its_member() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood", "--level", "7", "--out", "runs/g"]).ok();
    ws.anodet(&[
        "fit",
        "--category",
        "wood",
        "--scorer",
        "ensemble",
        "--member",
        "gaussian:7",
        "--out",
        "runs/e",
    ])
    .ok();
    let images: Vec<String> = fs::read_dir(ws.data().join("wood/test/hole"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .chain(
            fs::read_dir(ws.data().join("wood/test/good"))
                .unwrap()
                .map(|e| e.unwrap().path().display().to_string()),
        )
        .collect();
    let run = |model: &str| {
        let mut args = vec!["score", "--model", model];
        args.extend(images.iter().map(String::as_str));
        scores(&ws.anodet(&args).stdout())
    };
    let (plain, ensemble) = (run("runs/g"), run("runs/e"));
    let loaded = RunModel::load(&ws.path().join("runs/e")).unwrap();
    let member = &loaded.scorer.ensemble().unwrap().members()[0];
    for (p, e) in plain.iter().zip(&ensemble) {
        let standardised = (p - member.centre) / member.spread;
        assert!((standardised - e).abs() < 1e-3 * standardised.abs().max(1.0), "{p} {e}");
    }
}

#[test]
fn hlac_subspace_fits_scores_evaluates_and_maps() {
    let ws = Workspace::new();
    let stdout = ws
        .anodet(&[
            "fit",
            "--category",
            "wood",
            "--backbone",
            "hlac",
            "--scorer",
            "subspace",
            "--grid",
            "3",
            "--size",
            "96",
            "--out",
            "runs/s",
        ])
        .ok();
    assert!(stdout.contains("scorer subspace"), "{stdout}");
    let run = RunModel::load(&ws.path().join("runs/s")).unwrap();
    assert_eq!(run.scorer.subspace().unwrap().params().grid, 3);
    let image = "data/wood/test/hole/000.png";
    let scored = scores(&ws.anodet(&["score", "--model", "runs/s", image]).stdout());
    let drawn = ws.anodet(&["heatmap", "--model", "runs/s", "--out", "maps", image]).ok();
    let drawn_score: f64 = drawn.split('\t').nth(1).unwrap().parse().unwrap();
    assert!((drawn_score - scored[0]).abs() <= 1e-3 * scored[0].abs().max(1.0), "{drawn}");
    assert!(ws.path().join("maps/hole-000.png").is_file());
    assert!(ws.path().join("runs/s/heatmap-subspace.json").is_file());
    let stdout = ws
        .anodet(&[
            "eval",
            "--category",
            "wood",
            "--data",
            "data",
            "--backbone",
            "hlac",
            "--size",
            "96",
            "--scorer",
            "subspace",
            "--json",
            "--out",
            "ev",
        ])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["scorer"]["grid"], 4);
}

#[test]
fn bad_scorer_flags_name_the_flag() {
    let ws = Workspace::new();
    for (args, flag) in [
        (vec!["--scorer", "ensemble"], "--member"),
        (vec!["--scorer", "ensemble", "--member", "pca:7"], "--member"),
        (vec!["--member", "knn"], "--member"),
        (vec!["--scorer", "subspace", "--variance", "1.5", "--backbone", "hlac"], "--variance"),
        (vec!["--variance", "0.9"], "--variance"),
        (vec!["--scorer", "subspace", "--grid", "0", "--backbone", "hlac"], "--grid"),
        (vec!["--grid", "4"], "--grid"),
        (vec!["--scorer", "knn", "--grid", "4"], "--grid"),
        // Cells are HLAC's: a CNN backbone has none.
        (vec!["--scorer", "subspace"], "--scorer"),
    ] {
        let mut full = vec!["fit", "--category", "wood"];
        full.extend(args);
        ws.anodet(&full).fails_with(&[flag]);
    }
    assert!(!ws.path().join("runs/wood").exists());
}

#[test]
fn members_sharing_a_network_read_one_pass_as_each_would_alone() {
    use anodet::features::{embed_prepared, embed_prepared_shared, EmbeddingKind, FeatureSpec};
    let ws = Workspace::with_images(4, 2, 1);
    let runtime = common::cpu_runtime(4);
    let levels = |l: Vec<u8>| anodet::backbone::Levels::new(l).unwrap();
    let spec = FeatureSpec {
        backbone: "efficientnet_lite0".into(),
        levels: levels(vec![7]),
        size: Some("96".parse().unwrap()),
        aspect: anodet::data::image::Aspect::Squash,
    };
    let (backbone, preprocess) = runtime.open_backbone(&spec).unwrap();
    let prepared: Vec<_> = ["test/good/000.png", "test/hole/000.png", "train/good/001.png"]
        .iter()
        .map(|p| preprocess.prepare(&ws.data().join("wood").join(p)).unwrap())
        .collect();
    let images: Vec<_> = prepared.iter().collect();
    let (pooled, patches) = (levels(vec![6, 7, 8]), levels(vec![6, 7]));
    let readers = [
        (EmbeddingKind::Pooled, &pooled),
        (EmbeddingKind::Patches, &patches),
        (EmbeddingKind::Pooled, &patches),
    ];
    let shared = embed_prepared_shared(&backbone, &readers, &images).unwrap();
    assert_eq!(shared.len(), readers.len());
    for ((kind, levels), together) in readers.iter().zip(&shared) {
        let alone = embed_prepared(&backbone, *kind, levels, &images).unwrap();
        match (together, &alone) {
            (Embeddings::Pooled(a), Embeddings::Pooled(b)) => {
                assert_eq!(a.per_level, b.per_level, "pooled {levels:?}")
            }
            (Embeddings::Patches(a), Embeddings::Patches(b)) => {
                assert_eq!((a.grids.clone(), a.dim), (b.grids.clone(), b.dim));
                assert_eq!(
                    Vec::<f32>::try_from(a.tensor().view(-1)).unwrap(),
                    Vec::<f32>::try_from(b.tensor().view(-1)).unwrap()
                );
            }
            _ => panic!("{kind:?}: the reader's kind of embedding"),
        }
    }
}
