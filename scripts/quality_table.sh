#!/usr/bin/env bash
# The detection-quality table (issue 9) and the tune figures (issue 10) for some categories.
#   scripts/quality_table.sh DATA_DIR CATEGORY...
# Per category and setting: 3-fold CV image AUROC and honest F1 at seed 0, and with REPEATS > 1
# the mean over that many seeds. Settings: gaussian L7, gaussian L6-8, knn (L6+7, coreset 0.1,
# border 1), padim (L5+6+7, border 1), an ensemble (gaussian L6-8 + knn L6+7), hlac-gaussian, hlac-subspace. With TUNE=1
# also `anodet tune` (default grid) with the real defects and with synthetic defects only, and
# whether the two choose alike. Rows are markdown, on stdout; logs under $WORK (default a temp dir).
# Env: ANODET (binary; default anodet on PATH, else target/release/anodet), FLAGS (extra flags
# for every run, e.g. "--device cuda --models DIR"), REPEATS (default 1), TUNE (default 1),
# SETTINGS (space-separated subset of: g7 g68 knn padim ens hlacg hlacs, or none; default all),
# TUNE_MODES (default "real synthetic"), GRID (a --grid file for tune; default its default grid).
set -euo pipefail
data=${1:?usage: scripts/quality_table.sh DATA_DIR CATEGORY...}
shift
[ $# -gt 0 ] || { echo "usage: scripts/quality_table.sh DATA_DIR CATEGORY..." >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
ANODET=${ANODET:-$(command -v anodet || echo "$here/target/release/anodet")}
read -r -a flags <<< "${FLAGS:-}"
REPEATS=${REPEATS:-1}
TUNE=${TUNE:-1}
SETTINGS=${SETTINGS:-g7 g68 knn padim ens hlacg hlacs}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/anodet-quality.XXXXXX")}
mkdir -p "$WORK"
echo "logs and outputs: $WORK" >&2

settings_of() {
    case $1 in
        g7) echo "--scorer gaussian --levels 7" ;;
        g68) echo "--scorer gaussian --levels 6-8" ;;
        knn) echo "--scorer knn" ;;
        padim) echo "--scorer padim" ;;
        ens) echo "--scorer ensemble --member gaussian:6-8 --member knn:6,7" ;;
        hlacg) echo "--backbone hlac --scorer gaussian" ;;
        hlacs) echo "--backbone hlac --scorer subspace" ;;
    esac
}

# AUROC and honest F1 of one run (mean over the repeats when there are several).
figures() {
    python3 - "$1" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
runs = m["runs"]
auc = [r["auc"] for r in runs if r.get("auc") is not None]
f1 = [r["honest"]["f1"] for r in runs if r.get("honest") and r["honest"].get("f1") is not None]
mean = lambda v: sum(v) / len(v) if v else float("nan")
print(f"{runs[0]['auc']:.3f} | {runs[0]['honest']['f1']:.3f} | {mean(auc):.3f} | {mean(f1):.3f} | {m['seconds']:.0f}")
EOF
}

echo "| set | setting | AUROC seed 0 | honest F1 seed 0 | AUROC mean of $REPEATS | honest F1 mean | s |"
echo "|---|---|---|---|---|---|---|"
for category in "$@"; do
    for setting in $SETTINGS; do
        [ "$setting" = none ] && continue
        read -r -a extra <<< "$(settings_of "$setting")"
        out=$WORK/$category-$setting
        if "$ANODET" eval --data "$data" --category "$category" --folds 3 --seed 0 \
            --repeats "$REPEATS" --no-report --json "${extra[@]}" "${flags[@]}" --out "$out" \
            > "$out.json" 2> "$out.log"; then
            echo "| $category | $setting | $(figures "$out/metrics.json") |"
        else
            echo "| $category | $setting | failed: $(tail -n 1 "$out.log") |"
        fi
    done
    [ "$TUNE" = 1 ] || continue
    for mode in ${TUNE_MODES:-real synthetic}; do
        out=$WORK/$category-tune-$mode
        more=()
        [ -n "${GRID:-}" ] && more+=(--grid "$GRID")
        [ "$mode" = synthetic ] && more+=(--min-defects 1000000000)
        if "$ANODET" tune --data "$data" --category "$category" --out "$out" "${more[@]}" \
            "${flags[@]}" > "$out.txt" 2> "$out.log"; then
            python3 - "$out/tune.json" "$category" "$mode" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
o = t["outer"]
chosen = t["candidates"][t["chosen"]]
folds = "; ".join(f"{f['fold'] + 1}: {f['chosen_label']}" for f in t["outer_folds"])
print(f"| {sys.argv[2]} | tune ({sys.argv[3]} defects) | nested {o['auc']:.3f} | "
      f"{o['honest']['f1']:.3f} | final: {chosen['label']} (own CV {chosen['cv_auc']:.3f}) | "
      f"per fold: {folds} | {t['timing']['seconds']:.0f} (network {t['timing']['network_seconds']:.0f}, "
      f"fits {t['timing']['fit_score_seconds']:.0f}) |")
for c in t["candidates"]:
    s = c.get("inner_auc_spread") or {}
    print(f"|  | candidate {c['label']} | own CV {c['cv_auc']:.3f} | {c['cv_honest_f1']:.3f} | "
          f"inner {s.get('mean', float('nan')):.3f} ± {s.get('std', float('nan')):.3f} | | "
          f"{c['network_seconds'] + c['fit_score_seconds']:.0f} |")
EOF
        else
            echo "| $category | tune ($mode defects) | failed: $(tail -n 1 "$out.log") |"
        fi
    done
    # The synthetic choice judged on the real defects: its own CV AUROC in the real tune.
    python3 - "$WORK/$category-tune-real/tune.json" "$WORK/$category-tune-synthetic/tune.json" \
        "$category" <<'EOF' 2> /dev/null || true
import json, sys
real, synthetic = (json.load(open(p)) for p in sys.argv[1:3])
label = synthetic["candidates"][synthetic["chosen"]]["label"]
by_label = {c["label"]: c for c in real["candidates"]}
best = real["candidates"][real["chosen"]]
if label in by_label:
    mine = by_label[label]
    print(f"| {sys.argv[3]} | synthetic vs real choice | {'same' if label == best['label'] else 'different'} | "
          f"real-defect CV AUROC of the synthetic choice {mine['cv_auc']:.3f} vs the real choice "
          f"{best['cv_auc']:.3f} (loss {best['cv_auc'] - mine['cv_auc']:.3f}) | | | |")
EOF
done
