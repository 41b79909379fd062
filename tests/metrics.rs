//! Metrics against sklearn's roc_auc_score and precision_recall_curve (fixture from
//! scripts/make_fixtures.py; scores with ties).

use anodet::metrics::{best_f1_threshold, roc_auc, Confusion};

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    scores: Vec<f64>,
    labels: Vec<bool>,
    roc_auc: f64,
    best_f1: f64,
}

#[test]
fn auc_and_best_f1_match_sklearn() {
    let text = std::fs::read_to_string("tests/fixtures/metrics.json").expect("fixture");
    let fixture: Fixture = serde_json::from_str(&text).expect("fixture JSON");
    assert!(fixture.cases.len() >= 3);
    for case in fixture.cases {
        let auc = roc_auc(&case.scores, &case.labels).unwrap().unwrap();
        assert!((auc - case.roc_auc).abs() < 1e-12, "auc {auc} vs sklearn {}", case.roc_auc);
        let choice = best_f1_threshold(&case.scores, &case.labels).unwrap().unwrap();
        assert!(
            (choice.f1 - case.best_f1).abs() < 1e-12,
            "f1 {} vs sklearn {}",
            choice.f1,
            case.best_f1
        );
        // The returned threshold reproduces that F1 when applied.
        let applied = Confusion::at(&case.scores, &case.labels, choice.threshold).unwrap();
        assert!((applied.f1().unwrap() - choice.f1).abs() < 1e-12);
    }
}
