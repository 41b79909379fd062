#!/usr/bin/env bash
# The backbone table of the README: for each exported EfficientNet-Lite (0, 1, 2) and each set,
# image AUROC under 3-fold CV (seed 0) and the MVTec protocol (where the set has train/ and
# test/), at level 7 and levels 6-8, and the speed of the first (uncached) run: images per
# second end to end (decode, resize, network, pool, fit, score; CV, level 7).
# Features are cached in BENCH_CACHE (default: a temporary folder), so the other three
# evaluations of a set reuse them; where the first run found its features cached, no speed is
# measured (shown as "-").
# Usage: scripts/bench_backbones.sh [SHARED_DATA]   (default ../shared/data; also uses data/)
# Environment: BENCH_FLAGS, extra flags for every eval (e.g. "--aspect auto");
# BENCH_BACKBONES and BENCH_SETS, space-separated subsets (e.g. "efficientnet_lite1" and
# "magnetic-tile elpv-mono").
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared/data}
py=.venv/bin/python
bin=target/release/anodet
[ -x "$bin" ] || { echo "bench_backbones: run scripts/setup.sh first" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cache=${BENCH_CACHE:-$work/cache}
now() { date +%s.%N; }

# eval ARGS... -> prints "auc images precision" from the JSON report.
evaluate() {
    local out="$work/eval-$RANDOM$RANDOM"
    # shellcheck disable=SC2086
    "$bin" eval "$@" ${BENCH_FLAGS:-} --cache "$cache" --json --out "$out" 2>"$work/stderr" \
        | $py -c 'import json,sys; r=json.load(sys.stdin); a=r["runs"][0]["auc"]; print("%.3f" % a if a is not None else "-", r["images"], r["precision"])' \
        || { echo "bench_backbones: eval $*: $(tail -1 "$work/stderr")" >&2; echo "- 0 -"; }
}

printf '| backbone | set | img/s | CV L7 | CV L6-8 | MVTec L7 | MVTec L6-8 |\n|---|---|---|---|---|---|---|\n'
mkdir -p "$cache"
entries() { find "$cache" -name "*.f32" | wc -l; }
for backbone in ${BENCH_BACKBONES:-efficientnet_lite0 efficientnet_lite1 efficientnet_lite2}; do
    if [ ! -f "models/$backbone.pt" ]; then
        echo "bench_backbones: models/$backbone.pt absent (scripts/setup.sh exports it); skipped" >&2
        continue
    fi
    for set in "$shared magnetic-tile" "$shared mvtec-bottle" "data elpv-mono" "data elpv-poly" "data wood"; do
        read -r root category <<<"$set"
        if [ -n "${BENCH_SETS:-}" ] && ! [[ " $BENCH_SETS " == *" $category "* ]]; then continue; fi
        [ -d "$root/$category" ] || { echo "bench_backbones: $root/$category absent; skipped" >&2; continue; }
        common=(--data "$root" --category "$category" --backbone "$backbone")
        before=$(entries)
        start=$(now)
        read -r cv7 images precision < <(evaluate "${common[@]}" --protocol cv --folds 3 --seed 0 --level 7)
        seconds=$(awk "BEGIN { print $(now) - $start }")
        speed=-
        if [ $((10 * ($(entries) - before))) -ge $((9 * images)) ]; then
            speed=$(awk "BEGIN { printf \"%.1f\", $images / $seconds }")
        fi
        read -r cv68 _ _ < <(evaluate "${common[@]}" --protocol cv --folds 3 --seed 0 --levels 6-8)
        mv7=- mv68=-
        if [ -d "$root/$category/train" ] && [ -d "$root/$category/test" ]; then
            read -r mv7 _ _ < <(evaluate "${common[@]}" --protocol mvtec --level 7)
            read -r mv68 _ _ < <(evaluate "${common[@]}" --protocol mvtec --levels 6-8)
        fi
        printf '| %s (%s) | %s | %s | %s | %s | %s | %s |\n' \
            "$backbone" "$precision" "$category" "$speed" "$cv7" "$cv68" "$mv7" "$mv68"
    done
done
