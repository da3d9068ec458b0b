"""Learning check of DTI-Sprites on CPU: train an experiment for a wall-clock budget and watch it learn.

    python benchmarks/bench_dti_learn.py --exp quick/dti_sprites_tetrominoes --minutes 30 [--out DIR]

Builds the model and datamodule from ``experiments/_base/default.yaml`` + ``experiments/<exp>.yaml``
(dataset facts linked from the datamodule, as the CLI does), trains with Lightning's Trainer on
``--threads`` CPU threads, and every ``--eval-every`` seconds of training scores the test split:
ARI-FG as DTI-Sprites computes it (predicted background reassigned to the closest layer), the
standard ARI-FG, ARI on all pixels and the semantic mIoU. Evaluation time is not charged to the
budget. Prints the curve and final numbers (also written to ``<out>/curve.json``) and saves the
learned sprites and a decomposition grid as PNGs in ``--out``. ``--set model.lr=1e-3`` overrides a
config value (``model.``, ``data.`` or ``trainer.``; values parsed as YAML).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Dict, List

from learning import WallClockBudget, add_arguments, build, format_row, load_config, output_folder


def evaluate(model, loader, facts: Dict[str, int]) -> Dict[str, float]:
    """Test-split scores through the model's own decompose() and the suite's metrics."""
    import torch

    from objdecomp.methods.dti_sprites.module import foreground_reassigned
    from objdecomp.metrics import ARI, ARIFG, SemanticSegmentation
    from objdecomp.metrics.functional import adjusted_rand_index

    metrics = {"ari": ARI(), "ari_fg": ARIFG(facts["num_background"])}
    if facts["num_classes"]:
        metrics["semantic"] = SemanticSegmentation(facts["num_classes"])
    dti_scores = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            decomposition = model.decompose(batch["image"])
            for metric in metrics.values():
                if metric.applies_to(batch, decomposition):
                    metric.update(batch, decomposition)
            valid = batch["mask"] >= facts["num_background"]
            segmentation = foreground_reassigned(batch["image"], decomposition)
            dti_scores.append(adjusted_rand_index(segmentation, batch["mask"], valid))
    model.train(was_training)
    scores = torch.cat(dti_scores)
    values = {"ari_fg_dti": float(scores[~scores.isnan()].mean())}
    for name, metric in metrics.items():
        for key, value in metric.compute().items():
            if key in ("", "miou", "macc"):
                values[f"{name}_{key}" if key else name] = float(value)
    return values


class ScoreCurve(WallClockBudget):
    """The training budget, scoring the test split at each record into ``curve``."""

    def __init__(self, budget_s: float, eval_every_s: float, loader, facts: Dict[str, int],
                 curve: List[Dict[str, float]]):
        super().__init__(budget_s, eval_every_s)
        self.loader, self.facts, self.curve = loader, facts, curve

    def record(self, trainer, pl_module, outputs):
        loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
        row = {"minutes": self.minutes, "step": trainer.global_step, "epoch": trainer.current_epoch,
               "loss": loss, **evaluate(pl_module, self.loader, self.facts)}
        self.curve.append(row)
        print(format_row(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, exp="quick/dti_sprites_tetrominoes", minutes=30.0, eval_every=120.0, threads=2)
    args = parser.parse_args()

    import pytorch_lightning as pl
    import torch
    from torchvision.utils import save_image

    from objdecomp.visualize import decomposition_rows, save_rows

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    config = load_config(args.exp, args.set)
    model, datamodule = build(config)
    datamodule.setup("fit")
    datamodule.setup("test")
    facts = datamodule.facts
    curve: List[Dict[str, float]] = []
    monitor = ScoreCurve(args.minutes * 60, args.eval_every, datamodule.test_dataloader(), facts, curve)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor],
                         max_epochs=config.get("trainer", {}).get("max_epochs", 1000),
                         limit_val_batches=0, num_sanity_val_steps=0,
                         use_distributed_sampler=False)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    out = output_folder(args)
    (out / "curve.json").write_text(json.dumps({"exp": args.exp, "set": args.set, "curve": curve}, indent=1))
    model.eval()
    batch = next(iter(datamodule.test_dataloader()))
    batch = {k: v[:8] for k, v in batch.items()}
    with torch.no_grad():
        decomposition = model.decompose(batch["image"])
        save_rows(decomposition_rows(batch["image"], decomposition, batch), out / "decomposition.png")
        for name, picture in model.pictures().items():
            save_image(picture, out / f"{name}.png")
    final = curve[-1] if curve else {}
    print(f"final after {final.get('minutes', 0):.1f} min of training ({time.perf_counter() - start:.0f} s wall): "
          + " ".join(f"{k}={v:.4f}" for k, v in final.items() if isinstance(v, float)))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; pictures in {out}/")


if __name__ == "__main__":
    main()
