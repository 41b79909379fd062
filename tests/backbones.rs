//! The export path for other EfficientNets (the original study's B4): a checkpoint file goes
//! through scripts/export_backbone.py and the result fits and scores like the default. No B4
//! weights are reachable here, so the checkpoint holds seeded random weights; this checks the
//! export, the channel layout and the Rust side, not the weights' quality.

mod common;

use std::process::Command;

use common::Workspace;

#[test]
fn b4_from_a_checkpoint_file_exports_fits_and_scores() {
    let ws = Workspace::new();
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/export_backbone.py");
    let checkpoint = ws.path().join("b4-checkpoint.pth");
    let make_checkpoint = format!(
        "import torch, timm; torch.manual_seed(1); \
         torch.save(timm.create_model('tf_efficientnet_b4_ns').state_dict(), r'{}')",
        checkpoint.display()
    );
    let status = Command::new(&python)
        .args(["-W", "ignore", "-c", &make_checkpoint])
        .status()
        .expect("python");
    assert!(status.success(), "could not write a B4 checkpoint");
    let export = Command::new(&python)
        .args(["-W", "ignore"])
        .arg(&script)
        .args(["efficientnet_b4", "--weights"])
        .arg(&checkpoint)
        .arg("--out")
        .arg(ws.path().join("models"))
        .output()
        .expect("export");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("models/efficientnet_b4.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["channels"], serde_json::json!([48, 24, 32, 56, 112, 160, 272, 448, 1792]));
    assert_eq!(sidecar["input_size"], serde_json::json!([380, 380]));
    assert_eq!(sidecar["mean"], serde_json::json!([0.485, 0.456, 0.406]));
    assert!(sidecar["weights_sha256"].as_str().is_some_and(|s| s.len() == 64));

    let backbone = ws.path().join("models/efficientnet_b4.pt");
    let backbone = backbone.to_str().unwrap();
    let report = ws
        .anodet(&["fit", "--category", "wood", "--backbone", backbone, "--levels", "8,9", "--json"])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["backbone"], "efficientnet_b4");
    let model: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("runs/wood/model.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(model["gaussians"][1]["dimensions"], 1792);
    // score finds the backbone by the name stored in the run, in the models folder given.
    let run = ws.anodet(&[
        "score",
        "--models",
        &format!("{}/models", ws.path().display()),
        "data/wood/test/good/000.png",
    ]);
    assert!(run.code() < 2, "{}", run.stderr());
}
