"""Worker of the 2-process CPU DDP test of ReDO (tests/test_redo.py), run under torch.distributed.run.

Each rank fits a tiny ReDO on textured_shape with the strategy the experiments use for
adversarial methods, then saves its flattened parameters for the test to compare.
"""

import os
from pathlib import Path

import pytorch_lightning as pl
import torch

from datamodules.textured_shape import TexturedShapeDataModule
from objdecomp.methods.redo import ReDO

TINY = dict(image_size=16, z_dim=4, mask_width=8, mask_res_blocks=1, gen_width=4, disc_width=4,
            z_net_width=4)


def flat_parameters(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def main() -> None:
    out = Path(os.environ["REDO_DDP_OUT"])
    pl.seed_everything(0)
    model = ReDO(**TINY)
    initial = flat_parameters(model)
    data = TexturedShapeDataModule(image_size=16, train_size=64, val_size=8, test_size=8,
                                   batch_size=4)
    trainer = pl.Trainer(strategy="ddp_find_unused_parameters_true", accelerator="cpu", devices=2,
                         max_steps=8, use_distributed_sampler=False, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, data)
    torch.save({"steps": trainer.global_step, "parameters": flat_parameters(model),
                "initial": initial}, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
