//! Bad input: one `anodet: <path>: <problem>` line on stderr, exit status 2, no panic, and no
//! partial output.

mod common;

use std::fs;

use common::Workspace;

fn fit(ws: &Workspace) -> common::Run {
    ws.anodet(&["fit", "--category", "wood"])
}

/// A failed fit leaves no run folder and no staging leftovers. (The feature cache may hold
/// complete entries for the images that were read before the bad one: they are valid features.)
fn assert_nothing_written(ws: &Workspace) {
    let runs = ws.path().join("runs");
    let files: Vec<_> =
        ws.run_files().into_iter().filter(|f| !f.starts_with(runs.join("cache"))).collect();
    assert!(files.is_empty(), "files written: {files:?}");
    if runs.exists() {
        let leftovers: Vec<_> = fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "cache")
            .collect();
        assert!(leftovers.is_empty(), "leftovers in runs/: {leftovers:?}");
    }
}

#[test]
fn missing_category() {
    let ws = Workspace::new();
    ws.anodet(&["fit", "--category", "metal"]).fails_with(&[
        "data/metal",
        "no such category",
        "wood",
    ]);
    assert_nothing_written(&ws);
}

#[test]
fn empty_category_and_too_few_good_images() {
    let ws = Workspace::new();
    fs::create_dir_all(ws.data().join("empty/good")).unwrap();
    ws.anodet(&["fit", "--category", "empty"]).fails_with(&[
        "empty/good",
        "found 0 good images",
        "at least 10",
    ]);
    let few = Workspace::with_images(6, 1, 1);
    fit(&few).fails_with(&["wood/train/good", "found 6 good images", "at least 10"]);
    assert_nothing_written(&few);
}

#[test]
fn unknown_layout() {
    let ws = Workspace::new();
    fs::create_dir_all(ws.data().join("odd/pictures")).unwrap();
    ws.anodet(&["fit", "--category", "odd"]).fails_with(&[
        "data/odd",
        "unknown layout",
        "train/good",
    ]);
}

#[test]
fn corrupt_truncated_non_image_and_empty_files_stop_a_fit() {
    type Damage = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let cases: [(&str, Damage, &str); 3] = [
        ("truncated", Box::new(|png: &[u8]| png[..png.len() / 3].to_vec()), "corrupt or truncated"),
        ("text", Box::new(|_: &[u8]| b"this is not an image".to_vec()), "not an image"),
        ("empty", Box::new(|_: &[u8]| Vec::new()), "empty file"),
    ];
    for (name, damage, problem) in cases {
        let ws = Workspace::new();
        let victim = ws.data().join("wood/train/good/005.png");
        let bytes = fs::read(&victim).unwrap();
        fs::write(&victim, damage(&bytes)).unwrap();
        let run = fit(&ws);
        run.fails_with(&["train/good/005.png", problem]);
        assert_nothing_written(&ws);
        eprintln!("{name}: ok");
    }
}

#[test]
fn a_previous_run_survives_a_failed_fit() {
    let ws = Workspace::new();
    fit(&ws).ok();
    let before = fs::read(ws.path().join("runs/wood/model.json")).unwrap();
    fs::write(ws.data().join("wood/train/good/003.png"), b"").unwrap();
    fit(&ws).fails_with(&["003.png", "empty file"]);
    assert_eq!(fs::read(ws.path().join("runs/wood/model.json")).unwrap(), before);
}

#[test]
fn unwritable_output_folder() {
    let ws = Workspace::new();
    fs::write(ws.path().join("blocker"), b"a file, not a folder").unwrap();
    ws.anodet(&["fit", "--category", "wood", "--out", "blocker/run"]).fails_with(&["blocker"]);
}

#[test]
fn missing_and_corrupt_model_files() {
    let ws = Workspace::new();
    let image = "data/wood/test/good/000.png";
    ws.anodet(&["score", "--model", "runs/nothing", image])
        .fails_with(&["runs/nothing", "no such run folder"]);
    ws.anodet(&["score", image]).fails_with(&["runs/latest", "no fitted model yet"]);

    fit(&ws).ok();
    let model_json = ws.path().join("runs/wood/model.json");
    let original = fs::read_to_string(&model_json).unwrap();
    fs::write(&model_json, &original[..original.len() / 2]).unwrap();
    ws.anodet(&["score", image]).fails_with(&["model.json", "corrupt model file"]);
    fs::write(&model_json, &original).unwrap();

    let tensors = ws.path().join("runs/wood/model.safetensors");
    let bytes = fs::read(&tensors).unwrap();
    fs::write(&tensors, &bytes[..bytes.len() / 2]).unwrap();
    ws.anodet(&["score", image]).fails_with(&["model.safetensors", "corrupt model tensors"]);
    fs::remove_file(&tensors).unwrap();
    ws.anodet(&["score", image]).fails_with(&["model.safetensors"]);
}

#[test]
fn a_run_made_with_another_backbone_or_levels() {
    let ws = Workspace::new();
    fit(&ws).ok();
    let model_json = ws.path().join("runs/wood/model.json");
    let original = fs::read_to_string(&model_json).unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&original).unwrap();
    let image = "data/wood/test/good/000.png";

    model["backbone"]["torchscript_sha256"] = "0".repeat(64).into();
    fs::write(&model_json, model.to_string()).unwrap();
    ws.anodet(&["score", image]).fails_with(&["efficientnet_lite0.pt", "fitted with another"]);

    // Levels that do not match the stored Gaussians.
    let mut model: serde_json::Value = serde_json::from_str(&original).unwrap();
    model["levels"] = serde_json::json!([6]);
    fs::write(&model_json, model.to_string()).unwrap();
    ws.anodet(&["score", image]).fails_with(&["model.safetensors", "level6"]);

    // A consistent model file whose Gaussians come from another level than it claims.
    fs::write(&model_json, &original).unwrap();
    ws.anodet(&["fit", "--category", "wood", "--level", "6", "--out", "runs/level6"]).ok();
    let mut run = anodet::model::RunModel::load(&ws.path().join("runs/level6")).unwrap();
    let seven = anodet::backbone::Levels::new(vec![7]).unwrap();
    let models = run.scorer.gaussians().unwrap().models().to_vec();
    run.scorer =
        Box::new(anodet::gaussian::MultiLevelGaussian::from_parts(seven.clone(), models).unwrap());
    run.meta.levels = seven;
    run.meta.gaussians[0].level = 7;
    run.save(&ws.path().join("runs/level6")).unwrap();
    ws.anodet(&["score", "--model", "runs/level6", image]).fails_with(&[
        "runs/level6/model.json",
        "112 dimensions",
        "gives 192",
    ]);
}

#[test]
fn score_reports_each_bad_image_and_scores_the_rest() {
    let ws = Workspace::new();
    fit(&ws).ok();
    fs::write(ws.path().join("broken.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let run = ws.anodet(&["score", "data/wood/test/good/000.png", "broken.png", "missing.png"]);
    assert_eq!(run.code(), 2);
    assert_eq!(run.stdout().lines().count(), 1, "{}", run.stdout());
    let errors: Vec<&str> = run
        .0
        .stderr
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("anodet: broken.png: corrupt")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("anodet: missing.png: ")), "{errors:?}");
}

#[test]
fn bad_flags_exit_2() {
    let ws = Workspace::new();
    for args in [
        vec!["fit", "--category", "wood", "--levels", "10"],
        vec!["fit", "--category", "wood", "--size", "7"],
        vec!["fit", "--category", "wood", "--device", "tpu"],
        vec!["fit", "--category", "wood", "--threshold-quantile", "1.5"],
        vec!["fit", "--category", "wood", "--batch", "0"],
    ] {
        let run = ws.anodet(&args);
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
        assert!(!run.stderr().contains("panicked"), "{}", run.stderr());
    }
    assert_nothing_written(&ws);
}
