#!/usr/bin/env python3
"""The Python peer anodet is measured against: the same method, written the way its users write it.

Same TorchScript backbone file (fp32, models/<name>.pt), PIL decoding and bilinear resizing,
sklearn's LedoitWolf per level, Mahalanobis distance summed over levels, StratifiedKFold and the
F1-optimal threshold of precision_recall_curve. It runs as such scripts run: fp32, one image
decoded after another, batches of 16.

  reference.py eval --data ../shared/data --category magnetic-tile --protocol mvtec --levels 7
  reference.py score-features --fit FIT.npy --score SCORE.npy --meta FIT.npy.json --out scores.npy

`eval` prints one JSON object (AUC, F1, seconds, images/s); `score-features` fits on features
exported by `anodet features` and writes the scores of the other file, for the parity test.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from sklearn.covariance import LedoitWolf
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.model_selection import StratifiedKFold

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(EXTENSIONS) and not f.startswith("."))


def category_samples(root):
    """(path, defective) for train/good and for test/* of an MVTec-layout category."""
    train = [(p, False) for p in list_images(os.path.join(root, "train", "good"))]
    test = []
    for defect in sorted(os.listdir(os.path.join(root, "test"))):
        for path in list_images(os.path.join(root, "test", defect)):
            test.append((path, defect != "good"))
    return train, test


def extract(model, info, paths, levels, batch=16):
    size = info["input_size"][1], info["input_size"][0]
    mean = torch.tensor(info["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(info["std"]).view(1, 3, 1, 1)
    pooled = {level: [] for level in levels}
    for start in range(0, len(paths), batch):
        images = []
        for path in paths[start:start + batch]:
            with Image.open(path) as image:
                resized = image.convert("RGB").resize(size, Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1))
        x = (torch.stack(images) - mean) / std
        with torch.no_grad():
            maps = model(x)
        for level in levels:
            pooled[level].append(maps[level - 1].mean(dim=(2, 3)).numpy())
    return {level: np.concatenate(parts) for level, parts in pooled.items()}


def fit_score(fit, score, levels):
    total = np.zeros(len(next(iter(score.values()))))
    for level in levels:
        model = LedoitWolf().fit(fit[level])
        total += np.sqrt(model.mahalanobis(score[level]))
    return total


def best_f1(labels, scores):
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    best = int(np.argmax(f1[:-1]))
    return float(f1[best]), float(thresholds[best])


def evaluate(args):
    started = time.time()
    torch.set_num_threads(args.threads)
    info = json.load(open(args.model.replace(".pt", ".json")))
    model = torch.jit.load(args.model).eval()
    levels = [int(l) for l in args.levels.split(",")]
    train, test = category_samples(os.path.join(args.data, args.category))
    if args.protocol == "mvtec":
        fit = extract(model, info, [p for p, _ in train], levels)
        judged = extract(model, info, [p for p, _ in test], levels)
        labels = np.array([d for _, d in test])
        scores = fit_score(fit, judged, levels)
        images = len(train) + len(test)
    else:
        samples = train + test
        labels = np.array([d for _, d in samples])
        features = extract(model, info, [p for p, _ in samples], levels)
        scores = np.zeros(len(samples))
        folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
        for train_index, test_index in folds.split(np.zeros(len(samples)), labels):
            good = train_index[~labels[train_index]]
            scores[test_index] = fit_score({l: f[good] for l, f in features.items()},
                                           {l: f[test_index] for l, f in features.items()}, levels)
        images = len(samples)
    seconds = time.time() - started
    f1, threshold = best_f1(labels, scores)
    print(json.dumps({"category": args.category, "protocol": args.protocol, "levels": levels,
                      "images": images, "auc": float(roc_auc_score(labels, scores)), "oracle_f1": f1,
                      "threshold": threshold, "seconds": seconds, "images_per_second": images / seconds}))


def score_features(args):
    meta = json.load(open(args.meta))
    fit, score = np.load(args.fit), np.load(args.score)
    total = np.zeros(len(score))
    start = 0
    for width in meta["widths"]:
        model = LedoitWolf().fit(fit[:, start:start + width].astype(np.float64))
        total += np.sqrt(model.mahalanobis(score[:, start:start + width].astype(np.float64)))
        start += width
    np.save(args.out, total)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--data", required=True)
    e.add_argument("--category", required=True)
    e.add_argument("--model", default="models/efficientnet_lite0.pt")
    e.add_argument("--protocol", choices=["mvtec", "cv"], default="mvtec")
    e.add_argument("--levels", default="7")
    e.add_argument("--folds", type=int, default=3)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("score-features")
    s.add_argument("--fit", required=True)
    s.add_argument("--score", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--out", required=True)
    args = parser.parse_args()
    evaluate(args) if args.command == "eval" else score_features(args)


if __name__ == "__main__":
    sys.exit(main())
