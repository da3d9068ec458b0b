"""The paper's per-chunk encoding (§4): "We train separate encoders on chunks of 100 images as
we found that it makes the encoding more stable than training on the entire dataset. We run the
training for 1000 iterations with Adam, learning rate 0.0001."

With ``chunk_size`` set, ``decompose`` fits a freshly initialised encoder to the chunk it is
given (the evaluation's batch size is the chunk size) by Eq. 7, then encodes the chunk with it.
Each iteration uses the whole chunk (the paper gives no batch size). The fresh encoder draws its
initial weights from a generator seeded by the chunk's content, so evaluating the same images
twice gives the same masks without touching the global random state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from objdecomp.methods.perturbgan.networks import StyleEncoder


def encode_by_fitting(module, x: Tensor) -> Tensor:
    """Styles ``[B, L, D]`` for images ``x`` in [-1, 1] from an encoder fitted to them."""
    seed = int((x.detach().float().abs().sum() * 1000).item()) % (2 ** 31)
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(
            devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        x = x.clone()  # a normal tensor: evaluation may run in inference mode
        encoder = StyleEncoder(**module.encoder_args).to(x.device)
        optimizer = torch.optim.Adam(encoder.parameters(), lr=module.encoder_lr,
                                     betas=module.encoder_betas)
        frozen = [p for p in module.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        was_training = module.generator_ema.training
        module.generator_ema.eval()
        try:
            encoder.train()
            for _ in range(module.chunk_iterations):
                loss, _ = module.autoencoding_loss(encoder, x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            encoder.eval()
            with torch.no_grad():
                return encoder(x, module.generator_ema.mean_styles()).detach()
        finally:
            for p in frozen:
                p.requires_grad_(True)
            module.generator_ema.train(was_training)
