#!/usr/bin/env python3
"""Summarise a run.sh results folder: the figures issue 12 asks for.

Usage: summarize.py RESULTS_DIR   (prints the summary; run.sh writes it to summary.txt)
Each step NAME left NAME.rc, NAME.wall, NAME.out/.err, NAME.time and, for eval/fit, a NAME/
folder (metrics.json + scores.csv, or fit.json).
"""
import csv
import glob
import json
import os
import re
import sys

R = sys.argv[1]


def read(name, default=""):
    try:
        with open(os.path.join(R, name)) as handle:
            return handle.read()
    except OSError:
        return default


def load_json(path):
    try:
        with open(os.path.join(R, path)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def scores(step):
    try:
        with open(os.path.join(R, step, "scores.csv")) as handle:
            return {row["path"]: row for row in csv.DictReader(handle)}
    except OSError:
        return None


def rc(step):
    return read(f"{step}.rc", "?").strip()


def wall(step):
    text = read(f"{step}.wall").strip()
    return float(text) if text else None


def maxrss_mib(step):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", read(f"{step}.time"))
    return int(m.group(1)) / 1024 if m else None


def auc(step):
    metrics = load_json(f"{step}/metrics.json")
    return (metrics.get("runs") or [{}])[0].get("auc") if metrics else None


def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


order = {name: i for i, name in enumerate(read("steps.txt").split())}
steps = sorted((os.path.basename(p)[:-3] for p in glob.glob(os.path.join(R, "*.rc"))),
               key=lambda s: order.get(s, 1000))
lines = []
out = lines.append
out("anodet GPU check (issue 12): summary")
out(read("env.txt").strip())

out("")
out("1. forward only (python, the TorchScript files anodet runs, random input, batch 64):")
forward = {}
for step in steps:
    if step.startswith("forward"):
        for line in read(f"{step}.out").splitlines():
            out(f"   {line}")
            m = re.match(r"forward (\S+) \S+ (\S+): ([\d.]+) img/s", line)
            if m:
                forward[(m.group(1), m.group(2))] = float(m.group(3))

out("")
out("2. decode limit (anodet's read + hash + decode + resize + normalise, all cores, no network):")
decode = {}
for step in ("decode_224", "decode_380"):
    text = read(f"{step}.out").strip()
    if text:
        out(f"   {text}")
        m = re.search(r"([\d.]+) img/s", text)
        decode[step] = float(m.group(1)) if m else None

out("")
out("3. anodet features end to end (process wall clock: start, CUDA init, load, decode, forward,")
out("   write .npy), same generated 256 px images (big = wood x COPIES):")
images = None
m = re.search(r"big: (\d+) images", read("env.txt"))
if m:
    images = int(m.group(1))
rates = {}
for step in steps:
    if step.startswith("feat_"):
        w = wall(step)
        meta = None
        try:
            with open(os.path.join(os.path.dirname(R), step[5:] + ".npy.json")) as handle:
                meta = json.load(handle)
        except (OSError, ValueError):
            pass
        rate = images / w if images and w and rc(step) == "0" else None
        rates[step] = rate
        out(f"   {step:24} rc={rc(step):>4} images={images} wall={fmt(w, '.2f')} s  {fmt(rate)} img/s  "
            f"precision={meta.get('precision') if meta else '-'}  max RSS={fmt(maxrss_mib(step), '.0f')} MiB")
m2 = re.search(r"big2: (\d+) images", read("env.txt"))
if m2 and images:
    for base in ("feat_lite0_cuda_auto", "feat_b4_cuda_auto"):
        w1, w2 = wall(base), wall(base + "_big2")
        if w1 and w2 and w2 > w1 and rc(base) == "0" and rc(base + "_big2") == "0":
            extra = int(m2.group(1)) - images
            out(f"   {base}: steady state (big2 - big) = {extra} images / {w2 - w1:.2f} s = {extra / (w2 - w1):.1f} img/s; "
                f"fixed cost (start, CUDA init, first batches) ~ {w1 - images * (w2 - w1) / extra:.2f} s")
lite_fwd = forward.get(("efficientnet_lite0", "float16-autocast+channels_last"))
b4_fwd = forward.get(("efficientnet_b4", "float16-autocast+channels_last"))
for feat, dec, fwd, label in [("feat_lite0_cuda_auto", "decode_224", lite_fwd, "Lite0"),
                              ("feat_b4_cuda_auto", "decode_380", b4_fwd, "B4@380")]:
    limit = min(x for x in (decode.get(dec), fwd) if x) if (decode.get(dec) or fwd) else None
    if rates.get(feat) and limit:
        out(f"   {label} CUDA fp16 end to end / min(decode limit {fmt(decode.get(dec))}, forward limit {fmt(fwd)}) "
            f"= {rates[feat]:.1f} / {limit:.1f} = {rates[feat] / limit:.2f} (goal >= 0.85)")
for a, b in [("feat_lite0_cuda_auto", "feat_lite0_cpu_auto"), ("feat_lite0_cuda_fp32", "feat_lite0_cpu_fp32"),
             ("feat_lite0_cuda_auto", "feat_lite0_cuda_fp32"), ("feat_b4_cuda_auto", "feat_b4_cuda_fp32")]:
    if rates.get(a) and rates.get(b):
        out(f"   {a} / {b} = {rates[a]:.1f} / {rates[b]:.1f} = {rates[a] / rates[b]:.2f}x")

out("")
out("4. same images, two runs (scores.csv joined by path): AUROC, score differences, verdicts:")
pairs = [("eval_wood_cpu_fp32", "eval_wood_cuda_fp32"), ("eval_wood_cuda_fp32", "eval_wood_cuda_auto"),
         ("eval_wood_cpu_fp32", "eval_wood_cuda_auto"), ("eval_wood_cpu_fp32", "eval_wood_cpu_auto"),
         ("eval_mt_cpu_fp32", "eval_mt_cuda_fp32"), ("eval_mt_cuda_fp32", "eval_mt_cuda_auto"),
         ("eval_mt_cpu_fp32", "eval_mt_cuda_auto")]
for a, b in pairs:
    sa, sb = scores(a), scores(b)
    if not sa or not sb:
        continue
    common = sorted(set(sa) & set(sb))
    diffs = [abs(float(sa[p]["score"]) - float(sb[p]["score"])) for p in common]
    rel = [d / max(abs(float(sa[p]["score"])), 1e-12) for d, p in zip(diffs, common)]
    flips_o = sum(sa[p]["predicted_oracle"] != sb[p]["predicted_oracle"] for p in common)
    flips_h = sum(sa[p]["predicted_honest"] != sb[p]["predicted_honest"] for p in common)
    ma, mb = load_json(f"{a}/metrics.json"), load_json(f"{b}/metrics.json")
    delta = auc(b) - auc(a) if auc(a) is not None and auc(b) is not None else None
    out(f"   {a} ({ma.get('precision')}) vs {b} ({mb.get('precision')}): {len(common)} images; "
        f"AUROC {fmt(auc(a), '.4f')} vs {fmt(auc(b), '.4f')} (diff {fmt(delta, '+.4f')}); "
        f"max relative score diff {max(rel):.2e} (mean {sum(rel) / len(rel):.2e}); "
        f"verdicts differing: oracle {flips_o}, honest {flips_h}")

out("")
out("5. steps (rc 0 = ok; 124 = timed out; 'skip' = not run):")
for step in steps:
    metrics = load_json(f"{step}/metrics.json")
    extra = ""
    if metrics:
        n, s = metrics.get("extracted_images"), metrics.get("feature_seconds")
        extra = f"features {n} images in {fmt(s, '.2f')} s ({fmt(n / s if n and s else None)} img/s), " \
                f"precision {metrics.get('precision')}, AUROC {fmt(auc(step), '.4f')}"
    fit = load_json(f"{step}/fit.json")
    if fit:
        extra = f"fit.json device={fit.get('device')} precision={fit.get('precision')}"
    out(f"   {step:26} rc={rc(step):>4} wall={fmt(wall(step), '.1f'):>6} s  {extra}")

apps = read("nvsmi_apps.csv")
anodet_rows = [line for line in apps.splitlines() if "anodet" in line or "cuda_test" in line]
util = []
for line in read("nvsmi_gpu.csv").splitlines()[1:]:
    parts = [p.strip() for p in line.split(",")]
    try:
        util.append((int(parts[1].split()[0]), int(parts[2].split()[0])))
    except (IndexError, ValueError):
        pass
if apps or util:
    out(f"   nvidia-smi: {len(anodet_rows)} samples name anodet as a GPU process"
        + (f"; max GPU utilisation {max(u for u, _ in util)} %, max memory {max(m for _, m in util)} MiB" if util else ""))
test = read("cuda_test.out") + read("cuda_test.err")
for line in test.splitlines():
    if re.search(r"test result|SKIPPED|relative score difference|panicked", line):
        out(f"   cuda_test: {line.strip()[:200]}")

failed = [s for s in steps if rc(s) != "0"]
out("")
out("steps not ok: " + (", ".join(f"{s} ({rc(s)})" for s in failed) or "none"))
for s in failed:
    for line in read(f"{s}.err").strip().splitlines()[-3:]:
        out(f"   {s}: {line[:220]}")
if read("fatal.txt"):
    out(read("fatal.txt").strip())
print("\n".join(lines))
