#!/usr/bin/env bash
# Takes a screenshot of a review page (report.html) in headless Chromium, as a person would see
# it on opening the file: scripts/screenshot_report.sh runs/eval/wood-…/report.html [out.png]
# Installs Debian's `chromium` when it is missing (apt-get, as root or via sudo). The browser
# runs with a throwaway profile and no network features; the page itself needs no network.
set -euo pipefail

page=${1:?usage: scripts/screenshot_report.sh REPORT.html [SCREENSHOT.png]}
shot=${2:-${page%.html}.png}
[ -f "$page" ] || { echo "screenshot_report: $page: no such file" >&2; exit 2; }

if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
url="file://$(cd "$(dirname "$page")" && pwd)/$(basename "$page")"
shot_abs="$(cd "$(dirname "$shot")" && pwd)/$(basename "$shot")"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$shot_abs" --window-size=1400,2400 "$url" 2>/dev/null
echo "$shot_abs"
