#!/usr/bin/env bash
# Benchmark of `anodet tune` (default grid, cold feature cache), one category per argument:
# wall time, how it splits (network, fits and scoring), the nested (outer) AUROC and honest F1,
# the final choice, and each candidate's inner AUROC; then the same with synthetic defects
# (real defects ignored: --min-defects above their count) to compare the two choices.
# Usage: scripts/bench_tune.sh [DATA_DIR] [CATEGORY...]
#        (default: ../shared/data magnetic-tile; elpv-mono/elpv-poly/wood live in data/)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
shift || true
categories=("${@:-magnetic-tile}")
bin=target/release/anodet
py=.venv/bin/python
[ -x "$bin" ] || { echo "bench_tune: run scripts/setup.sh first" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary() {
  $py - "$1" <<'PY'
import json, sys
t = json.load(open(sys.argv[1] + "/tune.json"))
o = t["outer"]
h = o.get("honest") or {}
print(f"  nested AUROC {o['auc']:.4f}  honest F1 {h.get('f1') or float('nan'):.4f}"
      f"  final choice: {t['candidates'][t['chosen']]['label']}")
print(f"  time {t['timing']['seconds']:.0f} s (network {t['timing']['network_seconds']:.0f} s,"
      f" fits+scoring {t['timing']['fit_score_seconds']:.0f} s), {len(t['candidates'])} candidates,"
      f" dropped {len(t['dropped'])}")
for f in t["outer_folds"]:
    print(f"  outer fold {f['fold'] + 1}: {f['chosen_label']}  AUROC {f['auc']:.4f}")
for c in t["candidates"]:
    s = c["inner_auc_spread"] or {"mean": float("nan"), "std": float("nan")}
    print(f"    {c['label']:<55} inner {s['mean']:.4f} ± {s['std']:.4f}  own CV {c['cv_auc']:.4f}")
PY
}
for category in "${categories[@]}"; do
  echo "== $category (real defects)"
  $bin tune --data "$data" --category "$category" --cache "$work/cache-$category" --out "$work/$category-real" > /dev/null
  summary "$work/$category-real"
  echo "== $category (synthetic defects only)"
  $bin tune --data "$data" --category "$category" --min-defects 1000000 --cache "$work/cache-$category" --out "$work/$category-synth" > /dev/null
  summary "$work/$category-synth"
  $py - "$work/$category-real" "$work/$category-synth" <<'PY'
import json, sys
real, synth = (json.load(open(d + "/tune.json")) for d in sys.argv[1:3])
by_label = {c["label"]: c for c in real["candidates"]}
r = real["candidates"][real["chosen"]]
s = by_label.get(synth["candidates"][synth["chosen"]]["label"])
same = s is not None and s["label"] == r["label"]
loss = r["cv_auc"] - s["cv_auc"] if s else float("nan")
print(f"  synthetic choice {'equals' if same else 'differs from'} the real-defect choice;"
      f" its real-defect CV AUROC is {loss:.4f} below the real choice's")
PY
done
