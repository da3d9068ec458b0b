"""Spectral normalisation (Miyato et al. 2018) that works on channels-last weights in place.

``W -> W / σ(W)``, σ estimated by one power iteration per training forward, in the order of
Miyato et al.'s Algorithm 1 and of the original ``torch.nn.utils.spectral_norm`` (the one
GAN code of 2018-2019 used): ``v = Wᵀu/‖Wᵀu‖``, ``u = Wv/‖Wv‖``, ``σ = uᵀWv``. Buffers and
state-dict keys are those of ``torch.nn.utils.parametrizations.spectral_norm``.

Why not that one: it flattens the weight to a matrix, which copies a channels-last
convolution weight at every forward (and again in the backward), and its backward goes
through several full passes over the weight. Here σ, which does not depend on the order of
the matrix's columns, is computed on a view of the weight in its memory order (no copy), and
the gradient ``(G - ⟨G, W/σ⟩ u vᵀ) / σ`` takes two passes.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize


def spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Register :class:`SpectralNormalisation` on ``module.<name>`` (dimension 0 = outputs)."""
    parametrize.register_parametrization(module, name, SpectralNormalisation(getattr(module, name)))
    return module


class SpectralNormalisation(nn.Module):
    """The parametrisation ``W -> W / σ(W)`` of a linear (2-D) or convolution (4-D) weight.

    ``_u`` (outputs) and ``_v`` (inputs in ``[in, kh, kw]`` order, whatever the memory format)
    hold the power iteration's state, initialised by 15 iterations.
    """

    def __init__(self, weight: Tensor, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        with torch.no_grad():
            matrix = weight.flatten(1)
            for name, size in (("_u", matrix.shape[0]), ("_v", matrix.shape[1])):
                self.register_buffer(name, F.normalize(matrix.new_empty(size).normal_(), dim=0, eps=eps))
            for _ in range(15):
                self._v.copy_(self._power_iteration(matrix)[0])

    def forward(self, weight: Tensor) -> Tensor:
        matrix, to_memory_order, to_canonical = _matrix_in_memory_order(weight)
        with torch.no_grad():
            if self.training:
                v, sigma = self._power_iteration(matrix)
                self._v.copy_(to_canonical(v))
            else:
                v = to_memory_order(self._v)
                sigma = torch.dot(self._u, torch.mv(matrix, v))
        return _DivideBySigma.apply(weight, sigma, self._u.clone(), v.clone())

    def _power_iteration(self, matrix: Tensor) -> Tuple[Tensor, Tensor]:
        """One step from ``_u``, which it updates in place (DataParallel and DDP rely on it):
        the new ``v`` (in ``matrix``'s column order) and ``σ = uᵀWv = ‖Wv‖``."""
        v = F.normalize(torch.mv(matrix.t(), self._u), dim=0, eps=self.eps)
        projected = torch.mv(matrix, v)
        sigma = projected.norm()
        self._u.copy_(projected / sigma.clamp_min(self.eps))
        return v, sigma


def _matrix_in_memory_order(weight: Tensor):
    """``[out, rest]`` view of ``weight`` without a copy, and the two maps of a ``rest``-vector
    between the canonical ``[in, kh, kw]`` order and that view's column order."""
    if weight.dim() == 4 and not weight.is_contiguous() and weight.is_contiguous(
            memory_format=torch.channels_last):
        out, inputs, kh, kw = weight.shape
        matrix = weight.permute(0, 2, 3, 1).reshape(out, -1)  # a view: [out, kh, kw, in] in memory
        return (matrix, lambda v: v.view(inputs, kh, kw).permute(1, 2, 0).reshape(-1),
                lambda v: v.view(kh, kw, inputs).permute(2, 0, 1).reshape(-1))
    identity = lambda v: v  # noqa: E731
    return weight.contiguous().flatten(1), identity, identity


class _DivideBySigma(torch.autograd.Function):
    """``W / σ`` with ``σ = uᵀ W v`` for fixed ``u``, ``v``: its gradient is
    ``(G - ⟨G, W/σ⟩ u vᵀ) / σ``, where ``v`` is in the column order of ``W``'s memory view."""

    @staticmethod
    def forward(ctx, weight: Tensor, sigma: Tensor, u: Tensor, v: Tensor) -> Tensor:
        normalised = weight / sigma
        ctx.save_for_backward(normalised, sigma, u, v)
        return normalised

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None, None, None]:
        normalised, sigma, u, v = ctx.saved_tensors
        grad = grad.contiguous(memory_format=_memory_format(normalised))
        grad_matrix = _matrix_in_memory_order(grad)[0]
        normalised_matrix = _matrix_in_memory_order(normalised)[0]
        along = torch.dot(grad_matrix.reshape(-1), normalised_matrix.reshape(-1))  # ⟨G, W/σ⟩
        result = torch.empty_like(grad)  # the weight's shape and memory format
        result_matrix = _matrix_in_memory_order(result)[0]
        torch.div(grad_matrix, sigma, out=result_matrix)
        result_matrix.addr_(u * (-along / sigma), v)
        return result, None, None, None


def _memory_format(tensor: Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
