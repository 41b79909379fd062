#!/usr/bin/env python3
"""Write the test fixtures: sklearn's results on fixed inputs.

tests/fixtures/ledoit_wolf.json: sklearn's LedoitWolf on fixed inputs.
Each case stores the input matrix X (rows = images), query rows Q, and what
sklearn.covariance.LedoitWolf().fit(X) gives: location_, covariance_, precision_, shrinkage_,
and the Mahalanobis distances sqrt(model.mahalanobis(Q)) (sklearn returns squared distances).
Inputs are rounded to 6 decimals before fitting, so the JSON holds exactly what was fitted.

tests/fixtures/metrics.json: roc_auc_score and the best F1 over precision_recall_curve's
thresholds, on fixed score vectors with ties (scores rounded to 2 decimals to force them).
Run: .venv/bin/python scripts/make_fixtures.py
"""
import json
import os

import numpy as np
import sklearn
from sklearn.covariance import LedoitWolf
from sklearn.metrics import precision_recall_curve, roc_auc_score


def case(name, n, p, seed, offset):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(p, p)) / np.sqrt(p)
    X = np.round(rng.normal(size=(n, p)) @ mixing + offset, 6)
    Q = np.round(rng.normal(size=(4, p)) @ mixing * 1.5 + offset, 6)
    model = LedoitWolf().fit(X)
    return {
        "name": name,
        "x": X.tolist(),
        "queries": Q.tolist(),
        "location": model.location_.tolist(),
        "covariance": model.covariance_.tolist(),
        "precision": model.precision_.tolist(),
        "shrinkage": float(model.shrinkage_),
        "distances": np.sqrt(model.mahalanobis(Q)).tolist(),
    }


def metrics_case(n, positives_share, separation, seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < positives_share
    scores = np.round(rng.normal(size=n) + separation * labels, 2)
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"scores": scores.tolist(), "labels": labels.tolist(),
            "roc_auc": float(roc_auc_score(labels, scores)), "best_f1": float(np.max(f1))}


def write(name, fixture):
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", name)
    with open(path, "w") as handle:
        json.dump(fixture, handle)
        handle.write("\n")
    print(f"wrote {os.path.normpath(path)}")


def main():
    fixture = {
        "produced_by": f"scripts/make_fixtures.py with scikit-learn {sklearn.__version__}, numpy {np.__version__}",
        # Features of a CNN sit far from the origin: the offsets check the centring is exact.
        "cases": [case("more_images_than_dimensions", 40, 6, 1, 3.0),
                  case("more_dimensions_than_images", 12, 30, 2, 10.0)],
    }
    write("ledoit_wolf.json", fixture)
    write("metrics.json", {
        "produced_by": fixture["produced_by"],
        "cases": [metrics_case(60, 0.3, 1.0, 3), metrics_case(200, 0.5, 0.5, 4), metrics_case(25, 0.2, 3.0, 5)],
    })


if __name__ == "__main__":
    main()
