#!/usr/bin/env bash
# Benchmark and load test of `anodet serve`, one run, same images (a category of the shared
# sets, resized to 256 px), on loopback with wrk (Debian package; installed if missing):
#   - latency p50/p99 at concurrency 1 (POST /v1/score, one image per request);
#   - throughput at concurrency 8 and 32;
#   - against (i) `anodet score` run once per part (process start and model load included) and
#     (ii) `anodet eval --protocol mvtec` end-to-end images/s on the same images;
#   - 10 000 requests at concurrency 8 with POST /v1/reload in the middle: failed requests
#     (must be 0) and the server's RSS sampled every 0.5 s over the run.
# Usage: scripts/bench_serve.sh [DATA_DIR] [CATEGORY] [SECONDS]
#        (default ../shared/data mvtec-bottle 20; SECONDS per wrk measurement)
# Environment: BENCH_SOAK (requests of the reload run, default 10000, a multiple of 8),
#              ANODET (the binary, default target/release/anodet).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
category=${2:-mvtec-bottle}
seconds=${3:-20}
py=.venv/bin/python
bin=${ANODET:-$PWD/target/release/anodet}
soak_total=${BENCH_SOAK:-10000}
[ -x "$bin" ] || { echo "bench_serve: run scripts/setup.sh first" >&2; exit 2; }
[ -d "$data/$category" ] || { echo "bench_serve: $data/$category not found" >&2; exit 2; }
command -v wrk > /dev/null || apt-get install -y wrk > /dev/null || { echo "bench_serve: needs wrk (apt-get install wrk)" >&2; exit 2; }
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2> /dev/null; wait 2> /dev/null; rm -rf "$work"; }
trap cleanup EXIT
calc() { awk "BEGIN { print $1 }"; }
now() { date +%s.%N; }

# The category at 256 px (the line's camera images), MVTec layout.
$py - "$data/$category" "$work/data/$category" <<'PY'
import pathlib, sys
from PIL import Image
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for path in sorted(list(src.glob("train/good/*.png")) + list(src.glob("test/*/*.png"))):
    out = dst / path.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(path).resize((256, 256), Image.BILINEAR).save(out)
PY
images=$(find "$work/data/$category" -name '*.png' | wc -l)
parts=$(find "$work/data/$category/test" -name '*.png' | sort)
$bin fit --data "$work/data" --category "$category" --out "$work/run" --no-cache > /dev/null

# (ii) anodet eval, end to end on the same images.
start=$(now)
$bin eval --data "$work/data" --category "$category" --protocol mvtec --no-cache --out "$work/eval" --json > "$work/eval.json"
eval_rate=$(calc "$images / ($(now) - $start)")
precision=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["precision"])' "$work/eval.json")

# (i) anodet score, one process per part (20 parts).
start=$(now)
n=0
for part in $(echo "$parts" | head -20); do
    $bin score --model "$work/run" "$part" > /dev/null || true
    n=$((n + 1))
done
score_seconds=$(calc "($(now) - $start) / $n")

# The server, and a wrk script that posts the parts in turn.
ANODET_LOG=warn $bin serve --model "$work/run" --listen 127.0.0.1:0 --no-maps > "$work/listen.txt" 2> "$work/serve.log" &
server=$!
for _ in $(seq 600); do grep -q listening "$work/listen.txt" 2> /dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/listen.txt")
for _ in $(seq 600); do curl -sf "$url/readyz" > /dev/null && break; sleep 0.2; done
curl -sf "$url/readyz" > /dev/null || { echo "bench_serve: the server did not get ready" >&2; cat "$work/serve.log" >&2; exit 2; }
echo "$parts" | head -64 > "$work/parts.txt"
cat > "$work/post.lua" <<'LUA'
local bodies, index, answered, limit = {}, 0, 0, tonumber(os.getenv("BENCH_LIMIT") or "0")
for path in io.lines(os.getenv("BENCH_PARTS")) do
    local file = io.open(path, "rb"); bodies[#bodies + 1] = file:read("*a"); file:close()
end
function init(args) index = math.random(#bodies) end
function request()
    index = index % #bodies + 1
    return wrk.format("POST", "/v1/score", { ["Content-Type"] = "image/png" }, bodies[index])
end
function response(status, headers, body)
    answered = answered + 1
    if limit > 0 and answered >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT requests=%d seconds=%.3f p50_ms=%.2f p99_ms=%.2f non2xx=%d socket_errors=%d\n",
        summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
        e.status, e.connect + e.read + e.write + e.timeout))
end
LUA
export BENCH_PARTS="$work/parts.txt"
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" "$2"; }
run_wrk() {  # connections threads seconds out
    wrk -t"$2" -c"$1" -d"$3"s --timeout 10s -s "$work/post.lua" "$url" > "$4" 2>&1
}
run_wrk 1 1 5 "$work/warm.txt"
run_wrk 1 1 "$seconds" "$work/c1.txt"
run_wrk 8 2 "$seconds" "$work/c8.txt"
run_wrk 32 2 "$seconds" "$work/c32.txt"
rate() { calc "$(field requests "$1") / $(field seconds "$1")"; }

# 10 000 requests at concurrency 8 (8 threads x 1250), a reload once half are answered, RSS
# sampled every 0.5 s.
( while kill -0 "$server" 2> /dev/null; do
      awk '/VmRSS/ { print $2 / 1024 }' "/proc/$server/status" 2> /dev/null; sleep 0.5
  done > "$work/rss.txt" ) &
sampler=$!
BENCH_LIMIT=$((soak_total / 8)) wrk -t8 -c8 -d600s --timeout 10s -s "$work/post.lua" "$url" > "$work/soak.txt" 2>&1 &
soak=$!
answered() { curl -sf "$url/metrics" | awk '/^anodet_http_requests_total\{route="\/v1\/score"/ { n += $2 } END { print n + 0 }'; }
base=$(answered)
while [ "$(answered)" -lt $((base + soak_total / 2)) ] && kill -0 $soak 2> /dev/null; do sleep 0.2; done
reload=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/v1/reload")
# wrk runs for its whole -d even when every thread has stopped at its limit; once all requests
# are answered, SIGINT makes it stop and print its summary.
while [ "$(answered)" -lt $((base + soak_total)) ] && kill -0 $soak 2> /dev/null; do sleep 0.2; done
kill -INT $soak 2> /dev/null || true
wait $soak || true
kill $sampler 2> /dev/null || true
soak_requests=$(field requests "$work/soak.txt")
soak_failed=$(( $(field non2xx "$work/soak.txt") + $(field socket_errors "$work/soak.txt") ))
read -r rss_first rss_max rss_last < <(awk 'NR == 1 { f = $1 } { if ($1 > m) m = $1; l = $1 } END { printf "%.0f %.0f %.0f\n", f, m, l }' "$work/rss.txt")

printf '%s at 256 px: %s images, %s cores, network path: %s\n' "$category" "$images" "$(nproc)" "$precision"
printf 'serve, concurrency 1:   p50 %6.1f ms   p99 %6.1f ms   (goal p99 <= 30 ms)   %6.1f req/s\n' \
    "$(field p50_ms "$work/c1.txt")" "$(field p99_ms "$work/c1.txt")" "$(rate "$work/c1.txt")"
printf 'serve, concurrency 8:   %7.1f img/s   p99 %6.1f ms\n' "$(rate "$work/c8.txt")" "$(field p99_ms "$work/c8.txt")"
printf 'serve, concurrency 32:  %7.1f img/s   p99 %6.1f ms\n' "$(rate "$work/c32.txt")" "$(field p99_ms "$work/c32.txt")"
printf '(i)  anodet score per part:  %6.1f ms per part (%.1f parts/s)\n' "$(calc "$score_seconds * 1000")" "$(calc "1 / $score_seconds")"
printf '(ii) anodet eval end to end: %7.1f img/s\n' "$eval_rate"
printf 'concurrency 32 / eval = %.2f   (goal >= 0.8)\n' "$(calc "$(rate "$work/c32.txt") / $eval_rate")"
printf 'concurrency 1 / score per part = %.1fx more parts/s\n' "$(calc "$(rate "$work/c1.txt") * $score_seconds")"
printf 'soak: %s requests, reload in the middle (HTTP %s), %s failed (goal 0)\n' "$soak_requests" "$reload" "$soak_failed"
printf 'RSS over the soak: first %s MiB, max %s MiB, last %s MiB\n' "$rss_first" "$rss_max" "$rss_last"
[ "$soak_failed" = 0 ] && [ "$reload" = 200 ]
