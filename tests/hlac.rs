//! `--backbone hlac` works everywhere a CNN backbone does: fit, score, eval (with patch mode),
//! heatmap.

mod common;

use std::fs;

use common::Workspace;

#[test]
fn hlac_fits_scores_evaluates_and_maps() {
    let ws = Workspace::new();
    let fit = ws
        .anodet(&["fit", "--category", "wood", "--backbone", "hlac", "--size", "96", "--json"])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&fit).unwrap();
    assert_eq!(report["backbone"], "hlac");
    assert_eq!(
        report["levels"],
        serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8, 9]),
        "HLAC's default levels"
    );
    let model: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("runs/wood/model.json")).unwrap())
            .unwrap();
    assert_eq!(model["gaussians"][0]["dimensions"], 35);
    assert_eq!(model["gaussians"][8]["dimensions"], 25);

    let run = ws.anodet(&[
        "score",
        "--json",
        "data/wood/test/hole/000.png",
        "data/wood/test/good/000.png",
    ]);
    assert!(run.code() < 2, "{}", run.stderr());
    assert_eq!(run.stdout().lines().count(), 2);

    for extra in [&[][..], &["--grid", "2"][..]] {
        let mut args = vec![
            "eval",
            "--category",
            "wood",
            "--data",
            "data",
            "--backbone",
            "hlac",
            "--size",
            "96",
            "--out",
            "e",
        ];
        args.extend_from_slice(extra);
        ws.anodet(&args).ok();
        let metrics: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(ws.path().join("e/metrics.json")).unwrap())
                .unwrap();
        assert!(
            metrics["runs"][0]["auc"].as_f64().unwrap() > 0.5,
            "{extra:?}: {}",
            metrics["runs"][0]["auc"]
        );
    }

    // Cell maps are HLAC's heatmap; network-only methods are refused with a reason.
    let stdout = ws.anodet(&["heatmap", "--out", "maps", "data/wood/test/hole/000.png"]).ok();
    assert!(stdout.contains("maps/hole-000.png"), "{stdout}");
    assert!(ws.path().join("maps/hole-000.npy").is_file());
    ws.anodet(&["heatmap", "--method", "gradient", "data/wood/test/hole/000.png"])
        .fails_with(&["CNN backbone"]);
    // Patch mode is HLAC's; CNN runs are pointed to heatmap.
    ws.anodet(&["eval", "--category", "wood", "--data", "data", "--grid", "2", "--out", "x"])
        .fails_with(&["--grid", "heatmap"]);
}
