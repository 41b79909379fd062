#!/usr/bin/env bash
# Benchmark, one run, same images, ratios printed at the end:
#   (a) raw TorchScript forward throughput of the path anodet uses (batch 16, this machine's
#       threads, anodet's malloc settings): the limit for any end-to-end run;
#   (b) anodet end to end: decode, resize, forward, pool, fit on train/good, score test/*
#       (`anodet eval --protocol mvtec --no-cache`, wall clock, process start included);
#   (c) the Python peer end to end, as its users run it (scripts/reference.py: fp32, PIL);
#   (k) the same end to end with `--scorer knn --coreset 0.1` (patch memory), and its parts:
#       `anodet fit` time on train/good, `anodet score` ms per test image (the run loaded once),
#       and the memory bank's size on disk;
#   (p) the same for `--scorer padim` (a Gaussian per position, levels 5+6+7): end to end,
#       fit, score and the run's model size;
#   peak RSS of `anodet fit` at 100 and at 1000 training images (generated, 256 px).
# Then scripts/bench_decode.sh (decode/resize vs forward per set, camera-size sets; DECODE=0 skips).
# Usage: scripts/bench.sh [DATA_DIR] [CATEGORY]   (default ../shared/data mvtec-bottle)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
category=${2:-mvtec-bottle}
py=.venv/bin/python
bin=target/release/anodet
[ -x "$bin" ] || { echo "bench: run scripts/setup.sh first" >&2; exit 2; }
[ -d "$data/$category" ] || { echo "bench: $data/$category not found" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
images=$(find "$data/$category/train/good" "$data/$category/test" -type f | wc -l)
now() { date +%s.%N; }
calc() { awk "BEGIN { print $1 }"; }

precision=$($bin eval --data "$data" --category "$category" --protocol mvtec --no-cache --json --out "$work/warm" | $py -c 'import json,sys; print(json.load(sys.stdin)["precision"])')
variant=$([ "$precision" = bf16 ] && echo bf16.pt || { [ "$precision" = fp32_frozen ] && echo frozen.pt || echo pt; })

# Under anodet's memory policy (src/backbone/allocator.rs): with glibc's defaults the same
# loop runs half as fast, which would understate the limit.
a=$(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=268435456 \
    $py - "models/efficientnet_lite0.$variant" <<'PY'
import sys, time, torch
model = torch.jit.load(sys.argv[1]).eval()
x = torch.randn(16, 3, 224, 224)
with torch.no_grad():
    for _ in range(3):
        model(x)
    start, n = time.time(), 0
    while time.time() - start < 10:
        model(x)
        n += 16
print(n / (time.time() - start))
PY
)

start=$(now)
$bin eval --data "$data" --category "$category" --protocol mvtec --no-cache --out "$work/anodet" > "$work/anodet.txt"
b=$(calc "$images / ($(now) - $start)")

start=$(now)
$py scripts/reference.py eval --data "$data" --category "$category" --protocol mvtec --model models/efficientnet_lite0.pt > "$work/reference.json"
c=$(calc "$images / ($(now) - $start)")

start=$(now)
$bin eval --data "$data" --category "$category" --protocol mvtec --no-cache --scorer knn --coreset 0.1 --no-report --out "$work/knn" > "$work/knn.txt"
k=$(calc "$images / ($(now) - $start)")
start=$(now)
$bin fit --data "$data" --category "$category" --no-cache --scorer knn --coreset 0.1 --out "$work/knn-run" > /dev/null
k_fit=$(calc "$(now) - $start")
tests=$(find "$data/$category/test" -type f | wc -l)
start=$(now)
# Exit status 1 means "found an anomalous image" (the test set has defects), not a failure.
$bin score --model "$work/knn-run" $(find "$data/$category/test" -type f) > /dev/null || [ $? -eq 1 ]
k_ms=$(calc "1000 * ($(now) - $start) / $tests")
bank_mb=$(calc "$(stat -c %s "$work/knn-run/model.safetensors") / 1048576")

start=$(now)
$bin eval --data "$data" --category "$category" --protocol mvtec --no-cache --scorer padim --no-report --out "$work/padim" > "$work/padim.txt"
p=$(calc "$images / ($(now) - $start)")
start=$(now)
$bin fit --data "$data" --category "$category" --no-cache --scorer padim --out "$work/padim-run" > /dev/null
p_fit=$(calc "$(now) - $start")
start=$(now)
$bin score --model "$work/padim-run" $(find "$data/$category/test" -type f) > /dev/null || [ $? -eq 1 ]
p_ms=$(calc "1000 * ($(now) - $start) / $tests")
padim_mb=$(calc "$(stat -c %s "$work/padim-run/model.safetensors") / 1048576")

rss() {  # peak resident memory (MiB) of `anodet fit` on N generated training images
    $bin synth --data "$work/data" --category "n$1" --train-good "$1" --test-good 1 --per-defect 1 > /dev/null
    $py -c '
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)' \
        $bin fit --data "$work/data" --category "n$1" --no-cache --out "$work/run$1"
}
rss100=$(rss 100)
rss1000=$(rss 1000)

grep -E "image AUC" "$work/anodet.txt" | sed 's/^/anodet    /'
grep -E "image AUC" "$work/knn.txt" | sed 's/^/anodet knn /'
grep -E "image AUC" "$work/padim.txt" | sed 's/^/anodet padim /'
$py -c 'import json,sys; r=json.load(open(sys.argv[1])); print("reference image AUC", round(r["auc"], 4))' "$work/reference.json"
printf '%s: %s images (train/good + test), %s cores, anodet path: %s\n' "$category" "$images" "$(nproc)" "$precision"
printf '(a) forward only, batch 16:        %7.1f img/s\n' "$a"
printf '(b) anodet end to end:             %7.1f img/s\n' "$b"
printf '(c) Python peer end to end:        %7.1f img/s\n' "$c"
printf '(b)/(c) = %.2f   (target >= 2.5)\n' "$(calc "$b / $c")"
printf '(b)/(a) = %.2f   (target >= 0.85)\n' "$(calc "$b / $a")"
printf '(k) knn (coreset 0.1) end to end: %7.1f img/s   (k)/(c) = %.2f (target >= 2.5)\n' "$k" "$(calc "$k / $c")"
printf '    knn fit on train/good %.1f s, score %.1f ms/image (process start and load included), bank %.1f MB\n' "$k_fit" "$k_ms" "$bank_mb"
printf '(p) padim end to end:              %7.1f img/s   (p)/(c) = %.2f\n' "$p" "$(calc "$p / $c")"
printf '    padim fit on train/good %.1f s, score %.1f ms/image (process start and load included), model %.1f MB\n' "$p_fit" "$p_ms" "$padim_mb"
printf 'peak RSS of fit: %.0f MiB at 100 images, %.0f MiB at 1000 images (ratio %.2f)\n' "$rss100" "$rss1000" "$(calc "$rss1000 / $rss100")"

# The front end at camera resolution (decode + resize vs forward, per set): scripts/bench_decode.sh.
if [ "${DECODE:-1}" = 1 ]; then
    echo
    scripts/bench_decode.sh "$data"
fi
