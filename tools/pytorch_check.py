"""Replays m_phi in PyTorch: loads an optimizer exported by `l2l export --format safetensors` into
torch.nn.LSTMCell and torch.nn.Linear modules, runs them on the gradients of an `l2l trace` file and
compares the updates g_t with the ones L2L.Functional computed.

    /usr/bin/python3 tools/pytorch_check.py PHI.safetensors TRACE.safetensors [--tolerance 1e-6]

Prints the maximum relative difference max_t |g_t - g_t'|_inf / |g_t'|_inf and exits 1 above the
tolerance. Reads safetensors with the standard library, so only torch is needed.
"""
import argparse
import json
import math
import struct
import sys

import torch

DTYPES = {"F32": (torch.float32, 4), "F64": (torch.float64, 8)}


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, e in header.items():
        dtype, width = DTYPES[e["dtype"]]
        b, end = e["data_offsets"]
        raw = bytearray(data[8 + n + b:8 + n + end])
        t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(e["shape"]).clone()
    return tensors, meta


class Mphi(torch.nn.Module):
    """m_phi as PyTorch modules: a stack of LSTMCells and a linear output."""

    def __init__(self, config, tensors, prefix, dtype):
        super().__init__()
        h, layers = int(config["hidden"]), int(config["layers"])
        self.pre = config["preprocessing"]
        self.p = float(config.get("p", 10.0))
        self.out_scale = float(config["out_scale"])
        self.betas = [float(b) for b in config.get("betas", [])]
        self.beta2 = float(config.get("beta2", 0.999))
        inputs = {"logsign": 2, "moments": len(self.betas) + 1}.get(self.pre, 1)
        self.cells = torch.nn.ModuleList(
            [torch.nn.LSTMCell(inputs if k == 0 else h, h) for k in range(layers)])
        self.out = torch.nn.Linear(h, 1)
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.load_state_dict(state, strict=True)
        self.to(dtype)

    def moments(self, g, stats):
        """Adam-normalised moments: bias-corrected averages of g (each beta) and g^2 (beta2), over
        sqrt(v) + 1e-8, then g over the same; stats = (averages, step)."""
        avg, t = stats
        decay = torch.tensor(self.betas + [self.beta2], dtype=g.dtype).unsqueeze(1)
        avg = decay * avg + (1 - decay) * torch.cat([g.unsqueeze(0).expand(len(self.betas), -1), (g * g).unsqueeze(0)])
        t += 1
        hat = avg / (1 - decay ** t)
        rms = hat[-1].sqrt() + 1e-8
        x = torch.cat([hat[:-1], g.unsqueeze(0)]) / rms
        return x.t(), (avg, t)

    def features(self, g):
        if self.pre != "logsign":
            return g.unsqueeze(1)
        a = g.abs()
        big = a >= math.exp(-self.p)
        log_part = a.clamp_min(1e-38).log() / self.p
        x1 = torch.where(big, log_part, torch.full_like(g, -1.0))
        x2 = torch.where(big, g.sign(), g * math.exp(self.p))
        return torch.stack([x1, x2], dim=1)

    def forward(self, g, state):
        cells, stats = state
        if self.pre == "moments":
            x, stats = self.moments(g, stats)
        else:
            x = self.features(g)
        new = []
        for cell, (h, c) in zip(self.cells, cells):
            h, c = cell(x, (h, c))
            new.append((h, c))
            x = h
        return self.out_scale * self.out(x).squeeze(1), (new, stats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phi")
    ap.add_argument("trace")
    ap.add_argument("--tolerance", type=float, default=1e-6)
    args = ap.parse_args()
    phi, phi_meta = load(args.phi)
    trace, trace_meta = load(args.trace)
    group = trace_meta.get("group", "all")
    if "groups" in phi_meta:
        configs = {g["name"]: g["config"] for g in json.loads(phi_meta["groups"])}
        config, prefix = configs[group], group + "."
    else:
        config, prefix = json.loads(phi_meta["config"]), ""
    grads, ours = trace["gradients"], trace["updates"]
    dtype = grads.dtype
    m = Mphi(config, phi, prefix, dtype)
    n = grads.shape[1]
    h = int(config["hidden"])
    state = ([(torch.zeros(n, h, dtype=dtype), torch.zeros(n, h, dtype=dtype)) for _ in m.cells],
             (torch.zeros(len(m.betas) + 1, n, dtype=dtype), 0))
    worst = 0.0
    with torch.no_grad():
        for t in range(grads.shape[0]):
            g, state = m(grads[t], state)
            diff = (g - ours[t]).abs().max().item() / max(g.abs().max().item(), 1e-300)
            worst = max(worst, diff)
    print(f"{args.trace}: {trace_meta.get('optimizer')} group {group}, {grads.shape[0]} steps x {n} coordinates, "
          f"{trace_meta.get('dtype')} ({trace_meta.get('cell')} cell here), torch {torch.__version__}: "
          f"max relative difference {worst:.3e}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
