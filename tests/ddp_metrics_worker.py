"""Worker of tests/test_metrics_ddp.py, launched as
``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_metrics_worker.py OUT.json``.

Each rank evaluates its uneven shard (the evaluation sharding of datamodules.base: no padding,
no duplicates) of a deterministic set of images with every metric of :func:`build_metrics`;
rank 0 writes the synchronised values and, per metric, the number of images its summed state
has seen. The test imports :func:`evaluate` to compute the single-process values.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, Iterable, Iterator, Mapping, Tuple

import torch
import torch.distributed as dist

from datamodules.base import ShardedSampler
from objdecomp.metrics import SemanticSegmentation, build_metrics
from objdecomp.metrics.base import DecompositionMetric
from objdecomp.types import Decomposition

FACTS = dict(num_classes=3, num_background=1, max_objects=1)
NUM_IMAGES, BATCH_SIZE, SIZE, K = 13, 3, 12, 3
EMPTY_IMAGE = 5  # an image without foreground: ARI-FG is undefined there


def make_image(index: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Ground truth and prediction of image ``index``, a function of the index alone."""
    g = torch.Generator().manual_seed(1000 + index)
    mask = torch.randint(0, 4, (SIZE, SIZE), generator=g)
    if index == EMPTY_IMAGE:
        mask.zero_()
    truth = {"image": torch.rand(3, SIZE, SIZE, generator=g), "mask": mask,
             "semantic": torch.where(mask > 0, 1 + mask % 2, 0),
             "label": torch.randint(0, 3, (), generator=g),
             "count": torch.randint(0, 4, (), generator=g)}
    noisy = torch.nn.functional.one_hot(mask % K, K).permute(2, 0, 1).float() * 3
    prediction = {"masks": (noisy + torch.randn(K, SIZE, SIZE, generator=g) * 2).softmax(0),
                  "layers": torch.rand(K, 3, SIZE, SIZE, generator=g),
                  "classes": torch.randint(0, 4, (K,), generator=g),
                  "count": torch.randint(0, 4, (), generator=g)}
    return truth, prediction


def batches(indices: Iterable[int]) -> Iterator[Tuple[Dict[str, torch.Tensor], Decomposition]]:
    indices = list(indices)
    for start in range(0, len(indices), BATCH_SIZE):
        items = [make_image(i) for i in indices[start:start + BATCH_SIZE]]
        batch = {key: torch.stack([t[key] for t, _ in items]) for key in items[0][0]}
        pred = {key: torch.stack([p[key] for _, p in items]) for key in items[0][1]}
        yield batch, Decomposition(recon=batch["image"], masks=pred["masks"],
                                   background=torch.arange(K) == 0, layers=pred["layers"],
                                   classes=pred["classes"],
                                   count=pred["count"]).check(batch["image"])


def evaluate(indices: Iterable[int]) -> Dict[str, DecompositionMetric]:
    metrics = build_metrics(**FACTS)
    for batch, decomposition in batches(indices):
        for metric in metrics.values():
            if metric.applies_to(batch, decomposition):
                metric.update(batch, decomposition)
    return metrics


def values(metrics: Mapping[str, DecompositionMetric]) -> Dict[str, float]:
    return {f"{name}/{key}": value.item() for name, metric in metrics.items()
            for key, value in metric.compute().items()}


def images_counted(metric: DecompositionMetric) -> int:
    """The number of images behind the metric's (synchronised) summed state."""
    if hasattr(metric, "n_images"):
        return int(metric.n_images)
    if hasattr(metric, "pooled_counts"):  # a pooled fg/bg confusion: its pixel total instead
        return int(metric.pooled_counts.sum())
    total = int(metric.confusion.sum())  # pixels (semantic) or images (cluster)
    return total // SIZE**2 if isinstance(metric, SemanticSegmentation) else total


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shard = list(ShardedSampler(NUM_IMAGES, rank, world))
    metrics = evaluate(shard)
    result = {"values": values(metrics), "shard_sizes": [None] * world, "images": {}}
    dist.all_gather_object(result["shard_sizes"], len(shard))
    for name, metric in metrics.items():
        with metric.sync_context():
            result["images"][name] = images_counted(metric)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
