"""Time every evaluator on one batch: 64 images of 128x128 with 7 segments (issue 3).

Run: ``python benchmarks/bench_metrics.py`` (``make bench-metrics``). Prints ms per image for
each metric's ``update`` (including the argmax segmentation it reads) and its ``compute``,
then the functional ARI beside per-image loops over sklearn and torchmetrics for reference.
``--threads N`` changes the thread count (default 2).
Target: <= 1 ms per image for ARI. Best of several repeats (the least disturbed by
other load on a shared machine), 2 threads.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, Tuple

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score
from torchmetrics.functional.clustering import adjusted_rand_score as tm_adjusted_rand_score

from objdecomp.metrics import build_metrics
from objdecomp.metrics import functional as F
from objdecomp.types import Decomposition

B, SIZE, SEGMENTS, REPEATS = 64, 128, 7, 7


def voronoi(points: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` label of the nearest of ``points`` ``[B, S, 2]`` (a 7-segment scene)."""
    axis = torch.arange(SIZE, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).view(1, 1, -1, 2)
    return (grid - points.unsqueeze(2)).square().sum(-1).argmin(1).view(-1, SIZE, SIZE)


def make_data(seed: int = 0) -> Tuple[Dict[str, torch.Tensor], Decomposition]:
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(B, SEGMENTS, 2, generator=g) * SIZE
    mask = voronoi(points)
    predicted = voronoi(points + torch.randn(points.shape, generator=g) * 6)  # imperfect
    logits = torch.nn.functional.one_hot(predicted, SEGMENTS).permute(0, 3, 1, 2) * 4.0
    masks = (logits + torch.randn(logits.shape, generator=g)).softmax(1)
    batch = {"image": torch.rand(B, 3, SIZE, SIZE, generator=g), "mask": mask,
             "semantic": mask % 4, "label": torch.randint(0, 4, (B,), generator=g),
             "count": torch.randint(0, SEGMENTS, (B,), generator=g)}
    decomposition = Decomposition(
        recon=batch["image"], masks=masks, background=torch.arange(SEGMENTS) == 0,
        classes=torch.randint(0, 4, (B, SEGMENTS), generator=g),
        count=torch.randint(0, SEGMENTS, (B,), generator=g)).check(batch["image"])
    return batch, decomposition


def best_ms(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    torch.set_num_threads(parser.parse_args().threads)
    batch, decomposition = make_data()
    print(f"{B} images of {SIZE}x{SIZE}, {SEGMENTS} segments, {torch.get_num_threads()} threads")
    print(f"{'metric':<22}{'update ms/img':>15}{'compute ms':>12}")
    # Facts that enable every metric (fg_best needs max_objects == 1; it is timed all the same).
    for name, metric in build_metrics(num_classes=4, num_background=1, max_objects=1).items():
        metric.compute_with_cache = False  # time the computation, not torchmetrics' cache
        update = best_ms(lambda: metric.update(batch, decomposition)) / B
        compute = best_ms(metric.compute)
        print(f"{name:<22}{update:>15.3f}{compute:>12.2f}")

    seg, target = decomposition.segmentation(), batch["mask"]
    ours = F.adjusted_rand_index(seg, target)
    oracle = [adjusted_rand_score(t.flatten().numpy(), p.flatten().numpy())
              for p, t in zip(seg, target)]
    print(f"\nARI on label maps (max |ours - sklearn| = {np.abs(ours.numpy() - oracle).max():.1e})")
    rows = {"segmentation() alone": decomposition.segmentation,
            "functional (batched)": lambda: F.adjusted_rand_index(seg, target),
            "argmax + functional": lambda: F.adjusted_rand_index(decomposition.segmentation(),
                                                                 target),
            "sklearn, looped": lambda: [adjusted_rand_score(t.flatten().numpy(),
                                                            p.flatten().numpy())
                                        for p, t in zip(seg, target)],
            "torchmetrics, looped": lambda: [tm_adjusted_rand_score(p.flatten(), t.flatten())
                                             for p, t in zip(seg, target)]}
    for name, fn in rows.items():
        print(f"{name:<22}{best_ms(fn, repeats=3) / B:>15.3f}")


if __name__ == "__main__":
    main()
