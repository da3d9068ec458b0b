"""Seconds per update of each CIS phase at the paper's config, and the matmul floor
(``python -m objdecomp.methods.cis.speed [--device cuda] [--bf16]``; a benchmark, not a test).

Paper config (experiments/cis_multi_texture.yaml): Ω = dilated ResNet-50 (output stride 4) on
64x64 images upsampled to 128x128, K = 5, ψ at w = 32, object VAEs, batch 8. Each phase is
one optimizer update as in training (forward, backward, Adam step). FLOPs from
torch.utils.flop_counter (forward + backward); floor = FLOPs / the measured fp32 GEMM rate of
this process (a 2048^3 matmul), so "fraction" = floor / measured time.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from objdecomp.methods.cis import CIS
from objdecomp.methods.cis.losses import inpainter_loss, random_boxes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = CIS(num_masks=5, backbone="resnet50", backbone_width=64, segmenter_input_size=128,
                inpainter_width=32, object_vae=True, cycle_weight=1e-3, image_size=64).to(dev)
    images = torch.rand(8, 3, 64, 64, device=dev)
    edges = model.edges(images)
    opt_psi = torch.optim.Adam(model.inpainter.parameters(), 1e-4)
    opt_omega = torch.optim.Adam(list(model.segmenter.parameters()) + list(model.vae.parameters()), 3e-5)

    def psi_pretrain():
        m = random_boxes(images)
        inpainter_loss(model.inpainter(images, m, edges), images, m).backward(); opt_psi.step(); opt_psi.zero_grad()

    def psi_step():
        with torch.no_grad():
            m = model.segmenter.masks(images)
        inpainter_loss(model.inpainter(images, m, edges), images, m).backward(); opt_psi.step(); opt_psi.zero_grad()

    def frozen(params, f):
        for q in params: q.requires_grad_(False)
        try: f()
        finally:
            for q in params: q.requires_grad_(True)

    def omega_step(stage):
        def run():
            model.segmenter_objective(images, edges, stage, {}).backward(); opt_omega.step(); opt_omega.zero_grad()
        frozen(list(model.inpainter.parameters()), run)

    phases = {"psi_pretrain (stage 0)": psi_pretrain, "psi (stages 1-2)": psi_step,
              "omega (stage 1)": lambda: omega_step(1), "omega+vae+cycle (stage 2)": lambda: omega_step(2)}

    def sync():
        if dev.type == "cuda": torch.cuda.synchronize()

    x = torch.randn(2048, 2048, device=dev); sync()
    x @ x; sync(); t = time.perf_counter()
    for _ in range(3): x @ x
    sync(); gemm = 3 * 2 * 2048 ** 3 / (time.perf_counter() - t)
    print(f"device {dev}, threads {torch.get_num_threads()}, fp32 GEMM {gemm / 1e9:.1f} GFLOP/s")
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if a.bf16 else (lambda: torch.autocast(dev.type, enabled=False))
    for name, f in phases.items():
        with ctx():
            with FlopCounterMode(display=False) as counter:
                f()
            flops = counter.get_total_flops()
            times = []
            for _ in range(a.repeats):
                sync(); t = time.perf_counter(); f(); sync(); times.append(time.perf_counter() - t)
        best = min(times)
        print(f"{name:28s} {best:8.3f} s/iter  {flops / 1e12:7.3f} TFLOP  floor {flops / gemm:7.3f} s  "
              f"fraction {flops / gemm / best:.2f}")


if __name__ == "__main__":
    main()
