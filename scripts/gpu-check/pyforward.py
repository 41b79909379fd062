#!/usr/bin/env python3
"""Load anodet's exported TorchScript backbones and time forward passes.

  pyforward.py check MODEL.pt...           load on DEVICE, run 2 images, print level shapes
  pyforward.py bench MODEL.pt...           batch BATCH: fp32 and fp16/bf16 autocast, NCHW and
                                           channels-last (weights and input): img/s
Environment: DEVICE (default cuda), BATCH (64), SECONDS (3, timed part per case), WARMUP (5).
Size: the sidecar's input_size (MODEL.json next to MODEL.pt).
"""
import json, os, sys, time
import torch

device = torch.device(os.environ.get("DEVICE", "cuda"))
batch = int(os.environ.get("BATCH", "64"))
seconds = float(os.environ.get("SECONDS", "3"))
warmup = int(os.environ.get("WARMUP", "5"))


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def load(path):
    info = json.load(open(path[:-3] + ".json"))
    h, w = info["input_size"]
    module = torch.jit.load(path, map_location=device).eval()
    return module, info, h, w


def check(paths):
    ok = True
    for path in paths:
        module, info, h, w = load(path)
        with torch.no_grad():
            levels = module(torch.randn(2, 3, h, w, device=device))
        sync()
        shapes = [tuple(t.shape) for t in levels]
        finite = all(bool(torch.isfinite(t).all()) for t in levels)
        dev = {str(t.device) for t in levels}
        ok &= len(levels) == 9 and finite and dev == {str(torch.device(device.type, 0) if device.type == "cuda" else device)}
        print(f"check {os.path.basename(path)}: {info['architecture']} {h}x{w} on {dev}: 9 levels={len(levels) == 9} finite={finite} "
              f"level7={shapes[6]} torch={torch.__version__} exported_with={info.get('torch_version')}", flush=True)
    return 0 if ok else 1


def bench(paths):
    print(f"device {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}), batch {batch}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    for path in paths:
        module, info, h, w = load(path)
        x = torch.randn(batch, 3, h, w, device=device)
        half = torch.float16 if device.type == "cuda" else torch.bfloat16
        cases = [("fp32", None, False), ("fp32+channels_last", None, True),
                 (f"{str(half)[6:]}-autocast", half, False),
                 (f"{str(half)[6:]}-autocast+channels_last", half, True)]
        if device.type == "cuda":
            cases.append(("bf16-autocast+channels_last", torch.bfloat16, True))
        for label, amp, channels_last in cases:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            module = module.to(memory_format=fmt)
            xin = x.contiguous(memory_format=fmt)
            ctx = torch.autocast(device.type, dtype=amp) if amp is not None else torch.autocast(device.type, enabled=False)
            with torch.no_grad(), ctx:
                for _ in range(warmup):
                    out = module(xin)
                sync()
                start, n = time.perf_counter(), 0
                while True:
                    out = module(xin)
                    n += batch
                    if n % (batch * 4) == 0:
                        sync()
                        if time.perf_counter() - start >= seconds:
                            break
                sync()
                elapsed = time.perf_counter() - start
            print(f"forward {info['name']} {h}x{w} {label}: {n / elapsed:.1f} img/s "
                  f"({n} images in {elapsed:.2f} s, level7 dtype {out[6].dtype})", flush=True)
    return 0


if __name__ == "__main__":
    mode, paths = sys.argv[1], sys.argv[2:]
    sys.exit({"check": check, "bench": bench}[mode](paths))
