#!/usr/bin/env bash
# Front-end benchmark: can decoding and resizing keep up with the network? One run, per set:
#   (d) decode + resize only, all cores (examples/prepare.rs, the extractor's code path):
#       images/s and CPU ms per image; (d0) the same with full decoding, for comparison;
#   (f) forward only, batch 16, the network variant anodet runs: images/s, CPU ms per image
#       (one figure for all sets: the input is always 224 px);
#   (e) anodet end to end (`anodet eval --protocol mvtec --no-cache`, wall clock);
#   limit = cores / (decode CPU-s + forward CPU-s per image): the most a machine whose cores
#       are shared by decoding and the network can do; (e) as a fraction of it;
#   (p) the Python peer as its users run it (scripts/reference.py: full PIL decode), (e)/(p);
#   image AUROC of anodet, of BASE (a binary built before this change, when given) with the
#   largest per-image score difference |new - base| / base, and of the peer.
# Sets: the shared sets (mvtec-bottle, magnetic-tile) and camera-size versions of mvtec-bottle,
# every image enlarged (bicubic) to 2448x2048, as PNG and as JPEG q95 (4:2:0), generated into a
# temporary folder (removed at exit; nothing is committed).
# Usage: scripts/bench_decode.sh [DATA_DIR] [BASE_BINARY]      (default: ../shared/data, none)
#   SETS="mvtec-bottle camera-jpg" scripts/bench_decode.sh   runs a subset (names as printed)
#   PEER=0 skips the Python peer.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "${1:-../shared/data}")
base=${2:-}
sets=${SETS:-mvtec-bottle magnetic-tile camera-png camera-jpg}
peer=${PEER:-1}
py=.venv/bin/python
bin=target/release/anodet
cores=$(nproc)
[ -x "$bin" ] && [ -x "$py" ] || { echo "bench: run scripts/setup.sh first" >&2; exit 2; }
[ -z "$base" ] || [ -x "$base" ] || { echo "bench: $base is not an executable" >&2; exit 2; }
cargo build --release --quiet --example prepare
prepare=target/release/examples/prepare
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }

# Camera-size sets: the bottle images enlarged to 2448x2048, PNG and JPEG q95.
if [[ " $sets " == *" camera-"* ]]; then
    echo "bench: generating camera-size sets (2448x2048 PNG and JPEG q95) in $work" >&2
    $py - "$data/mvtec-bottle" "$work" <<'PY'
import os, sys
from multiprocessing import Pool
from PIL import Image
src, work = sys.argv[1], sys.argv[2]
jobs = []
for split in ("train", "test"):
    for defect in sorted(os.listdir(os.path.join(src, split))):
        folder = os.path.join(src, split, defect)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".png"):
                jobs.append((os.path.join(folder, name), split, defect, name[:-4]))
def enlarge(job):
    path, split, defect, stem = job
    with Image.open(path) as image:
        big = image.convert("RGB").resize((2448, 2048), Image.BICUBIC)
    for kind, ext, options in (("png", "png", {}), ("jpg", "jpg", {"quality": 95})):
        out = os.path.join(work, "camera", kind, "camera-" + kind, split, defect)
        os.makedirs(out, exist_ok=True)
        big.save(os.path.join(out, f"{stem}.{ext}"), **options)
with Pool(os.cpu_count()) as pool:
    pool.map(enlarge, jobs)
PY
fi
root_of() { case $1 in camera-png) echo "$work/camera/png" ;; camera-jpg) echo "$work/camera/jpg" ;; *) echo "$data" ;; esac; }

precision=$($bin eval --data "$data" --category mvtec-bottle --protocol mvtec --no-cache --no-report --json --out "$work/warm" | $py -c 'import json,sys; print(json.load(sys.stdin)["precision"])')
variant=$([ "$precision" = bf16 ] && echo bf16.pt || { [ "$precision" = fp32_frozen ] && echo frozen.pt || echo pt; })
# The forward pass runs under anodet's allocator policy (src/backbone/allocator.rs): with glibc's
# defaults the same Python loop runs at half the speed (21.8 against 48.3 img/s here).
read -r forward forward_ms < <(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 \
    MALLOC_TOP_PAD_=268435456 $py - "models/efficientnet_lite0.$variant" <<'PY'
import sys, time, torch
model = torch.jit.load(sys.argv[1]).eval()
x = torch.randn(16, 3, 224, 224)
with torch.no_grad():
    for _ in range(3):
        model(x)
    start, cpu, n = time.time(), time.process_time(), 0
    while time.time() - start < 10:
        model(x)
        n += 16
print(n / (time.time() - start), 1000 * (time.process_time() - cpu) / n)
PY
)

auc() { $py -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["runs"][0]["auc"], 4))' "$1"; }
score_diff() {  # largest |new - base| / base over the images, and the median
    $py - "$1" "$2" <<'PY'
import csv, sys
read = lambda p: {r["path"]: float(r["score"]) for r in csv.DictReader(open(p))}
a, b = read(sys.argv[1]), read(sys.argv[2])
d = sorted(abs(a[k] - b[k]) / abs(b[k]) for k in b)
print(f"{d[-1]:.4f} {d[len(d) // 2]:.4f}")
PY
}

rows=()
for set in $sets; do
    root=$(root_of "$set")
    [ -d "$root/$set" ] || { echo "bench: $root/$set not found, skipped" >&2; continue; }
    echo "bench: $set" >&2
    images=$(find "$root/$set/train/good" "$root/$set/test" -type f | wc -l)
    read -r _ _ _ _ _ _ _ decode _ decode_ms < <($prepare "$root/$set/train" "$root/$set/test")
    read -r _ _ _ _ _ _ _ full _ full_ms < <($prepare --full "$root/$set/train" "$root/$set/test")
    limit=$(calc "$cores * 1000 / ($decode_ms + $forward_ms)")
    start=$(now)
    $bin eval --data "$root" --category "$set" --protocol mvtec --no-cache --no-report --json --out "$work/new-$set" > "$work/new-$set.json"
    e2e=$(calc "$images / ($(now) - $start)")
    line=$(printf '%-14s %6s  (d) %6.1f img/s %6.2f ms  (d0) %6.1f img/s %6.2f ms  (f) %6.1f img/s %6.2f ms  limit %6.1f  (e) %6.1f = %.2f of limit  AUROC %s' \
        "$set" "$images" "$decode" "$decode_ms" "$full" "$full_ms" "$forward" "$forward_ms" "$limit" "$e2e" "$(calc "$e2e / $limit" 2)" "$(auc "$work/new-$set/metrics.json")")
    if [ -n "$base" ]; then
        start=$(now)
        "$base" eval --data "$root" --category "$set" --protocol mvtec --no-cache --json --out "$work/base-$set" > /dev/null
        before=$(calc "$images / ($(now) - $start)")
        read -r worst median < <(score_diff "$work/new-$set/scores.csv" "$work/base-$set/scores.csv")
        line+=$(printf '  | base: (e) %6.1f img/s, AUROC %s, score diff max %s median %s' "$before" "$(auc "$work/base-$set/metrics.json")" "$worst" "$median")
    fi
    if [ "$peer" = 1 ]; then
        start=$(now)
        $py scripts/reference.py eval --data "$root" --category "$set" --protocol mvtec --model models/efficientnet_lite0.pt > "$work/peer-$set.json"
        p=$(calc "$images / ($(now) - $start)")
        line+=$(printf '  | peer (p) %6.1f img/s, (e)/(p) %.2f, AUROC %s' "$p" "$(calc "$e2e / $p" 2)" \
            "$($py -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["auc"], 4))' "$work/peer-$set.json")")
    fi
    rows+=("$line")
done

printf '%s cores, anodet network path: %s (%s); (d) decode+resize, (d0) with full decoding, (f) forward, (e) end to end; ms = CPU ms per image\n' \
    "$cores" "$precision" "efficientnet_lite0.$variant"
printf '%s\n' "${rows[@]}"
