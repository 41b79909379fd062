#!/usr/bin/env bash
# What the review page (report.html) adds to `anodet eval`: the same evaluation with and without
# it (--no-report), cold (--no-cache: the network runs on every image) and warm (features from
# the cache, so eval itself is quick and the page's own forward passes dominate). Prints the
# seconds of each run, the page's share, its HTML size and how many overlays it drew.
# The cold pair runs REPEATS times (default 3), alternating, and the medians are compared: on a
# shared VM single runs of the same eval vary by 10-20 %.
# Usage: scripts/bench_report.sh [DATA_DIR] [CATEGORY]   (default ../shared/data magnetic-tile)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
category=${2:-magnetic-tile}
bin=target/release/anodet
[ -x "$bin" ] || { echo "bench_report: run scripts/setup.sh first" >&2; exit 2; }
[ -d "$data/$category" ] || { echo "bench_report: $data/$category not found" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
run() { # label, extra flags…: prints the wall-clock seconds of one eval
    local out="$work/$1"; shift
    local start; start=$(now)
    "$bin" eval --data "$data" --category "$category" --out "$out" "$@" >/dev/null 2>&1
    awk "BEGIN { printf \"%.1f\", $(now) - $start }"
}
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
plains=() pages=()
for _ in $(seq "${REPEATS:-3}"); do
    plains+=("$(run cold-plain --no-cache --no-report)")
    pages+=("$(run cold-page --no-cache)")
done
echo "cold runs (s): without page ${plains[*]}; with page ${pages[*]}"
cold_plain=$(echo "${plains[*]}" | median)
cold_page=$(echo "${pages[*]}" | median)
run fill --cache "$work/cache" --no-report >/dev/null
warm_plain=$(run warm-plain --cache "$work/cache" --no-report)
warm_page=$(run warm-page --cache "$work/cache")
html=$(stat -c %s "$work/cold-page/report.html")
overlays=$(find "$work/cold-page/report-files" -name 'o*.jpg' | wc -l)
thumbnails=$(find "$work/cold-page/report-files" -name 't*.jpg' | wc -l)
echo "category $category: $thumbnails images, $overlays overlays, report.html $((html / 1024)) KiB"
awk -v a="$cold_plain" -v b="$cold_page" 'BEGIN { printf "cold (no cache, medians): eval %.1f s, with page %.1f s: page adds %.1f s (%.0f%%)\n", a, b, b - a, 100 * (b - a) / a }'
awk -v a="$warm_plain" -v b="$warm_page" 'BEGIN { printf "warm (cached features): eval %.1f s, with page %.1f s: page adds %.1f s (%.0f%%)\n", a, b, b - a, 100 * (b - a) / a }'
