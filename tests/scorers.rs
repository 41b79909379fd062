//! The ensemble and HLAC subspace scorers end to end: fit, score, eval, heatmap, save/load, and
//! their bad flags.

mod common;

use std::fs;

use anodet::model::RunModel;
use anodet::scorer::ScorerSpec;
use common::Workspace;

fn scores(stdout: &str) -> Vec<f64> {
    stdout.lines().map(|l| l.split('\t').nth(1).unwrap().parse().unwrap()).collect()
}

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

    // An ensemble has no map of its own.
    ws.anodet(&["heatmap", "--model", "runs/e", images[1]]).fails_with(&["--model", "ensemble"]);
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
