//! `anodet eval` end to end on generated data: outputs, protocols, cache, repeats, degenerate cases.

mod common;

use std::fs;

use common::Workspace;

fn metrics(ws: &Workspace, out: &str) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(ws.path().join(out).join("metrics.json")).unwrap())
        .unwrap()
}

#[test]
fn cross_validation_writes_every_output_and_scores_each_image_once() {
    let ws = Workspace::with_images(20, 6, 4);
    let stdout = ws
        .anodet(&["eval", "--category", "wood", "--data", "data", "--folds", "3", "--out", "out"])
        .ok();
    for needle in ["image AUC", "oracle threshold", "honest (out-of-fold)", "wrote out"] {
        assert!(stdout.contains(needle), "{needle} missing:\n{stdout}");
    }
    for file in
        ["scores.csv", "metrics.json", "roc.png", "histogram.png", "strip.png", "confusion.png"]
    {
        let path = ws.path().join("out").join(file);
        assert!(path.is_file() && fs::metadata(&path).unwrap().len() > 0, "{file}");
    }
    let mut reader = csv::Reader::from_path(ws.path().join("out/scores.csv")).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        ["path", "label", "defect_type", "fold", "score", "predicted_oracle", "predicted_honest"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 20 + 6 + 3 * 4, "every image exactly once");
    let mut paths: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), rows.len());
    assert!(rows.iter().all(|r| ["1", "2", "3"].contains(&&r[3])));

    let m = metrics(&ws, "out");
    assert_eq!(m["version"], 1);
    assert_eq!(m["defective_images"], 12);
    let run = &m["runs"][0];
    let auc = run["auc"].as_f64().unwrap();
    assert!(auc > 0.8, "the generated defects are plain to see: auc {auc}");
    assert_eq!(run["folds"].as_array().unwrap().len(), 3);
    for key in ["hole", "scratch", "stain"] {
        assert!(run["auc_per_defect_type"][key].is_number(), "{key}");
    }
    let confusion = &run["honest"]["confusion"];
    let total: u64 = ["true_negative", "false_positive", "false_negative", "true_positive"]
        .iter()
        .map(|k| confusion[k].as_u64().unwrap())
        .sum();
    assert_eq!(total, 38, "the pooled out-of-fold confusion matrix covers every image");
    assert_eq!(run["honest"]["thresholds"].as_array().unwrap().len(), 3);
}

#[test]
fn a_second_eval_with_other_levels_reads_the_cache() {
    let ws = Workspace::new();
    ws.anodet(&["eval", "--category", "wood", "--data", "data", "--out", "first"]).ok();
    assert_eq!(metrics(&ws, "first")["cache_hits"], 0);
    ws.anodet(&[
        "eval",
        "--category",
        "wood",
        "--data",
        "data",
        "--levels",
        "5,6",
        "--out",
        "second",
    ])
    .ok();
    let second = metrics(&ws, "second");
    assert_eq!(second["cache_hits"], second["extracted_images"]);
    assert_eq!(second["levels"], serde_json::json!([5, 6]));
    ws.anodet(&["eval", "--category", "wood", "--data", "data", "--no-cache", "--out", "third"])
        .ok();
    assert_eq!(metrics(&ws, "third")["cache_hits"], 0);
}

#[test]
fn repeats_report_a_spread_and_seeds_change_folds() {
    let ws = Workspace::new();
    ws.anodet(&["eval", "--category", "wood", "--data", "data", "--repeats", "3", "--out", "r"])
        .ok();
    let m = metrics(&ws, "r");
    assert_eq!(m["runs"].as_array().unwrap().len(), 3);
    for figure in ["auc", "oracle_f1", "honest_f1"] {
        assert!(m["spread"][figure]["std"].is_number(), "{figure}");
    }
    assert_eq!(m["runs"][0]["seed"], 0);
    assert_eq!(m["runs"][1]["seed"], 1);
    // Other seeds put other images in the folds, so the folds' training scores differ.
    let training = |run: usize| m["runs"][run]["folds"][0]["training_scores"].clone();
    assert_ne!(training(0), training(1));
}

#[test]
fn mvtec_protocol_and_latest_fit_defaults() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "wood"]).ok();
    // Category and data come from the latest fit.
    let stdout = ws.anodet(&["eval", "--protocol", "mvtec", "--out", "m"]).ok();
    assert!(
        stdout.contains("MVTec protocol") && stdout.contains("honest (label-free)"),
        "{stdout}"
    );
    let m = metrics(&ws, "m");
    assert_eq!(m["category"], "wood");
    assert_eq!(m["images"], 4 + 3 * 3, "test images only");
    assert!(m["runs"][0]["honest"]["method"].as_str().unwrap().contains("label-free"));
    ws.anodet(&["eval", "--protocol", "mvtec", "--repeats", "2", "--out", "x"])
        .fails_with(&["--repeats"]);
}

#[test]
fn degenerate_sets_are_explained() {
    let ws = Workspace::new();
    // Only good images: AUC and F1 undefined, a warning, no NaN, exit 0.
    let only_good = ws.data().join("clean/good");
    fs::create_dir_all(&only_good).unwrap();
    for entry in fs::read_dir(ws.data().join("wood/train/good")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, only_good.join(path.file_name().unwrap())).unwrap();
    }
    let run = ws.anodet(&["eval", "--category", "clean", "--data", "data", "--out", "clean"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr().contains("warning") && run.stderr().contains("no defective images"),
        "{}",
        run.stderr()
    );
    assert!(run.stdout().contains("n/a"));
    let text = fs::read_to_string(ws.path().join("clean/metrics.json")).unwrap();
    assert!(!text.contains("NaN"));
    assert!(metrics(&ws, "clean")["runs"][0]["auc"].is_null());

    // A class smaller than the number of folds: say how many are needed; nothing written.
    let few = Workspace::with_images(12, 1, 1);
    few.anodet(&["eval", "--category", "wood", "--data", "data", "--folds", "5", "--out", "f"])
        .fails_with(&["5 folds need at least 5 defective images, found 3"]);
    assert!(!few.path().join("f").exists());
}
