#!/usr/bin/env bash
# Speed of aspect-true input: feature extraction time per pixel fed to the network, --aspect keep
# against squash (and auto), at each precision the CPU offers, on the same images in one run.
# bf16 runs only where the CPU has bf16 units (AMX or AVX-512 BF16; elsewhere libtorch emulates
# it about ten times slower than fp32, which says nothing); BF16=1 forces it anyway.
# Prints one line per run (seconds, images, megapixels fed, ms per megapixel) and the ratio
# keep / squash of time per pixel per precision (goal: at most 1.5).
# Usage: scripts/bench_aspect.sh [DATA_DIR] [CATEGORY] [BACKBONE]
#        (default ../shared/data magnetic-tile efficientnet_lite0)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
category=${2:-magnetic-tile}
backbone=${3:-efficientnet_lite0}
py=.venv/bin/python
bin=target/release/anodet
[ -x "$bin" ] || { echo "bench_aspect: run scripts/setup.sh first" >&2; exit 2; }
[ -d "$data/$category" ] || { echo "bench_aspect: $data/$category not found" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }

precisions=fp32
if grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo || [ "${BF16:-0}" = 1 ]; then
    precisions="fp32 bf16"
else
    echo "bench_aspect: this CPU has no bf16 units: fp32 only (BF16=1 forces bf16)"
fi

# Megapixels the network is fed for each aspect: anodet's rule (short side to the input size,
# long side in proportion rounded to a multiple of 32; auto keeps beyond 1.5:1).
megapixels() {
    local side
    side=$($py -c "import json; print(json.load(open('models/$backbone.json'))['input_size'][0])")
    $py - "$data/$category" "$1" "$side" <<'PY'
import math, os, sys
from PIL import Image
root, aspect, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
total = 0
for split in ("train", "test", "good", "bad"):
    for folder, _, files in os.walk(os.path.join(root, split)):
        for name in files:
            try:
                w, h = Image.open(os.path.join(folder, name)).size
            except OSError:
                continue
            keep = aspect == "keep" or (aspect == "auto" and max(w, h) > 1.5 * min(w, h))
            if keep:
                scale = side / max(min(w, h), 1)
                r = lambda v: max(math.floor(v * scale / 32 + 0.5), 1) * 32
                total += r(w) * r(h)
            else:
                total += side * side
print(total / 1e6)
PY
}

declare -A per_mp
for precision in $precisions; do
    for aspect in squash keep auto; do
        # Uncached, so every image goes through decoding and the network (process start included).
        start=$(now)
        $bin features --data "$data" --category "$category" --backbone "$backbone" \
            --precision "$precision" --aspect "$aspect" --no-cache --out "$work/f.npy" >/dev/null 2>&1
        seconds=$(awk "BEGIN { print $(now) - $start }")
        images=$($py -c "import json;print(len(json.load(open('$work/f.npy.json'))['paths']))")
        mp=$(megapixels "$aspect")
        ms=$(awk "BEGIN { printf \"%.1f\", 1000 * $seconds / $mp }")
        per_mp[$precision-$aspect]=$ms
        printf '%-5s %-6s %7.1f s  %5d images  %7.1f Mpx fed  %6s ms/Mpx\n' \
            "$precision" "$aspect" "$seconds" "$images" "$mp" "$ms"
    done
    awk "BEGIN { printf \"%s: keep / squash time per pixel = %.2f (goal <= 1.5); auto / squash = %.2f\n\", \
        \"$precision\", ${per_mp[$precision-keep]} / ${per_mp[$precision-squash]}, \
        ${per_mp[$precision-auto]} / ${per_mp[$precision-squash]} }"
done
