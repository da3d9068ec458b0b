"""Differentiable transformation modules (DTI-Clustering / DTI-Sprites, appendix C.1).

Each module maps predicted parameters to a transformation. Modules are parameter-free; the
heads predicting their parameters live in :class:`TransformSequence` and start at zero (C.1:
"all transformation modules are initialized to identity functions"). Every module is the
identity at zero parameters except the positioning module ``pos``, which follows the authors'
code (see below).

- ``col`` (2C): per-channel affine colour change ``(1 + w_c) x_c + b_c``.
- ``pos`` (3): scale and translation, the coarse layer positioning of C.1.
- ``sim`` (4): scale, rotation and translation. ``aff`` (6), ``proj`` (9): affine and projective.
- ``tps`` (32): thin-plate spline with 4×4 control points on [−1, 1]².

Spatial modules act on sampling points (backward warping, ``grid_sample`` with
``align_corners=False``): a module maps points of its output image to points of its input
image. A sequence is applied to an image left to right (``col-proj-tps``: colour, then the
homography, then the spline), so its maps are applied to output points right to left and
*fused* into one sampling grid: the image is resampled once per sequence, whatever the number
of its modules (no blur from chained resamplings, one grid_sample call).

Positioning, two parameterisations (``position`` of :class:`TransformSequence`):

- ``"half_canvas"`` (:class:`Position`, the authors' code): θ = (1 + e^s)·I + t maps the canvas
  onto the sprite's frame, so at zero parameters a sprite covers the central half of the canvas
  whatever its size in pixels, and its displayed size 1/(1 + e^s) never exceeds the canvas.
- ``"native_size"`` (:class:`NativeSizePosition`): the identity *in pixels*: a sprite of ``h×w``
  pixels starts drawn at ``h×w`` pixels, centred, with an unbounded scale ``e^s``.

Curriculum (C.2): ``name@E`` switches a module on at epoch E; a module without ``@E`` is on from
the start. A sequence whose first module carries an epoch (``proj@150``) starts with no module
on, as the authors' sequences start with an identity module (``identity_projective``).
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdecomp.nn.backbones import GroupedMLP
from objdecomp.schedules import Curriculum


def softclip(x: Tensor, slope: float = 0.01) -> Tensor:
    """Identity on [0, 1], slope ``slope`` outside (C.2: keeps gradients, unlike a hard clip)."""
    # (1 − slope)·clamp(x) + slope·x, as one lerp: two passes over memory instead of six.
    return torch.lerp(x, x.clamp(0, 1), 1 - slope)


def pixel_grid(height: int, width: int, device=None, dtype=None) -> Tensor:
    """``[H·W, 2]`` (x, y) pixel centres in normalised coordinates (``align_corners=False``)."""
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)


def inside(points: Tensor) -> Tensor:
    """``[..., P]`` bool: the points fall on the image, i.e. within [−1, 1]²."""
    return (points.abs() <= 1).all(-1)


def sample(images: Tensor, points: Tensor, size: Tuple[int, int], padding: str = "zeros") -> Tensor:
    """Bilinear samples of ``images`` ``[N, C, h, w]`` at ``points`` ``[N, H·W, 2]`` -> ``[N, C, H, W]``."""
    grid = points.reshape(points.shape[0], *size, 2).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


class Transform(nn.Module):
    """A parameter-free transformation module; ``num_params`` parameters, identity at 0."""

    num_params: int = 0
    spatial: bool = True


class Color(Transform):
    """``col``: ``y_c = (1 + w_c) x_c + b_c`` per channel (DTI-Clustering's colour module)."""

    spatial = False

    def __init__(self, channels: int = 3):
        super().__init__()
        self.channels = channels
        self.num_params = 2 * channels

    def forward(self, rgb: Tensor, theta: Tensor) -> Tensor:
        """``rgb`` ``[..., C, h, w]``, ``theta`` ``[..., 2C]`` (broadcast over leading dims)."""
        gain, bias = theta[..., : self.channels, None, None], theta[..., self.channels :, None, None]
        return torch.addcmul(bias, 1 + gain, rgb)


class Position(Transform):
    """``pos`` as the authors' code: a canvas point ``p`` samples the sprite at ``(1 + e^s) p + t``.

    At zero parameters the sprite's frame covers the central half of the canvas (θ = 2I). The
    frame's centre on the canvas is ``−t / (1 + e^s)`` and its size ``1 / (1 + e^s)`` of the
    canvas (:meth:`placement`); ``scale`` is accepted for a common signature and not used.
    """

    num_params = 3

    def __init__(self, scale: Sequence[float] = (1.0, 1.0)):
        super().__init__()

    def forward(self, points: Tensor, theta: Tensor) -> Tensor:
        zoom = 1 + theta[..., :1].exp()
        return points * zoom[..., None, :] + theta[..., None, 1:]

    @staticmethod
    def placement(theta: Tensor) -> Tuple[Tensor, Tensor]:
        """``(centre [..., 2], size [...])`` of the sprite's frame on the canvas ([−1, 1] units)."""
        zoom = 1 + theta[..., 0].exp()
        return -theta[..., 1:] / zoom[..., None], 1 / zoom

    @staticmethod
    def placed(centre: Tensor, size: Tensor) -> Tensor:
        """Parameters that put the frame at ``centre`` with ``size`` (< 1: never beyond the canvas)."""
        zoom = 1 / size
        return torch.cat([(zoom - 1).log()[..., None], -centre * zoom[..., None]], -1)


class NativeSizePosition(Transform):
    """``pos`` starting at the identity in pixels: a point ``p`` samples ``(p − t) / (σ e^s)``.

    Args:
        scale: ``(σ_x, σ_y)``, the size of the input relative to the output at ``s = 0``
            (``(w/W, h/H)`` for a sprite of ``h×w`` on an ``H×W`` canvas).
    """

    num_params = 3

    def __init__(self, scale: Sequence[float] = (1.0, 1.0)):
        super().__init__()
        self.register_buffer("scale", torch.tensor(list(scale), dtype=torch.float32), persistent=False)

    def forward(self, points: Tensor, theta: Tensor) -> Tensor:
        size = self.scale * theta[..., :1].exp()
        return (points - theta[..., None, 1:]) / size[..., None, :]

    def placement(self, theta: Tensor) -> Tuple[Tensor, Tensor]:
        """``(centre [..., 2], size [...])`` of the frame on the canvas (size along x)."""
        return theta[..., 1:], self.scale[0] * theta[..., 0].exp()

    def placed(self, centre: Tensor, size: Tensor) -> Tensor:
        """Parameters that put the frame at ``centre`` with ``size`` (along x)."""
        return torch.cat([(size / self.scale[0]).log()[..., None], centre], -1)


POSITIONS = {"half_canvas": Position, "native_size": NativeSizePosition}


class Similarity(Transform):
    """``sim`` (C.1): ``q = [[1 + a, −b], [b, 1 + a]] p + t`` (scale, rotation, translation)."""

    num_params = 4

    def forward(self, points: Tensor, theta: Tensor) -> Tensor:
        a, b = 1 + theta[..., 0], theta[..., 1]
        matrix = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
        return points @ matrix.transpose(-1, -2) + theta[..., None, 2:]


class Affine(Transform):
    """``aff``: ``q = (I + β) [p, 1]`` with β a 2×3 matrix."""

    num_params = 6

    def forward(self, points: Tensor, theta: Tensor) -> Tensor:
        beta = theta.unflatten(-1, (2, 3))
        return points + points @ beta[..., :2].transpose(-1, -2) + beta[..., None, :, 2]


class Projective(Transform):
    """``proj``: homography ``H = I₃ + β`` on homogeneous points."""

    num_params = 9

    def __init__(self, eps: float = 1e-4):
        super().__init__()
        self.eps = eps

    def forward(self, points: Tensor, theta: Tensor) -> Tensor:
        homography = torch.eye(3, device=theta.device, dtype=theta.dtype) + theta.unflatten(-1, (3, 3))
        ones = torch.ones_like(points[..., :1])
        mapped = torch.cat([points, ones], -1) @ homography.transpose(-1, -2)
        depth = mapped[..., 2:]
        # Keep the division finite where a strong homography sends points to infinity.
        depth = torch.where(depth < 0, -1.0, 1.0) * depth.abs().clamp_min(self.eps)
        return mapped[..., :2] / depth


class ThinPlateSpline(Transform):
    """``tps``: thin-plate spline through a ``grid×grid`` lattice of control points on [−1, 1]².

    The output-side control points ``c_i`` are fixed; the parameters move their images
    (``c_i + β_i``). The spline reproduces affine maps exactly, so
    ``f(p) = p + Φ(p) L⁻¹[:, :n] β`` with ``Φ(p) = [U(‖p − c_i‖), 1, p]``, ``U(r) = r² log r``
    and ``L`` the usual TPS system matrix, whose inverse is precomputed once.
    """

    def __init__(self, grid: int = 4):
        super().__init__()
        axis = torch.linspace(-1, 1, grid, dtype=torch.float64)
        ys, xs = torch.meshgrid(axis, axis, indexing="ij")
        controls = torch.stack([xs, ys], -1).reshape(-1, 2)
        n = controls.shape[0]
        self.num_params = 2 * n
        system = torch.zeros(n + 3, n + 3, dtype=torch.float64)
        system[:n, :n] = self._kernel(controls, controls)
        system[:n, n] = system[n, :n] = 1
        system[:n, n + 1 :] = controls
        system[n + 1 :, :n] = controls.T
        solve = torch.linalg.inv(system)[:, :n]  # coefficients from control-point targets
        self.register_buffer("controls", controls.float(), persistent=False)
        self.register_buffer("solve", solve.float(), persistent=False)

    @staticmethod
    def _kernel(points: Tensor, controls: Tensor) -> Tensor:
        squared = ((points[..., :, None, :] - controls) ** 2).sum(-1)
        return 0.5 * squared * squared.clamp_min(1e-12).log()  # r² log r = ½ r² log r²

    def forward(self, points: Tensor, theta: Tensor) -> Tensor:
        features = torch.cat([self._kernel(points, self.controls), torch.ones_like(points[..., :1]),
                              points], -1)
        coefficients = self.solve @ theta.unflatten(-1, (-1, 2))
        return points + features @ coefficients


def build_transform(name: str, channels: int, scale: Sequence[float],
                    position: str = "half_canvas") -> Transform:
    """A transformation module by its short name (Table 6); ``position`` picks ``pos``'s form."""
    if position not in POSITIONS:
        raise ValueError(f"unknown position '{position}'; choose from {sorted(POSITIONS)}")
    factories = {"col": lambda: Color(channels), "pos": lambda: POSITIONS[position](scale),
                 "sim": Similarity, "aff": Affine, "proj": Projective, "tps": ThinPlateSpline}
    if name not in factories:
        raise ValueError(f"unknown transformation '{name}'; choose from {sorted(factories)}")
    return factories[name]()


def parse_sequence(spec: str) -> List[Tuple[str, int]]:
    """``"col-proj@100-tps@350"`` -> ``[("col", 0), ("proj", 100), ("tps", 350)]``.

    ``name@E`` switches module ``name`` on at epoch E (the curriculum of C.2), a module without
    ``@E`` is on from epoch 0; modules must be switched on in order. ``""`` or ``"id"`` is the
    empty (identity) sequence.
    """
    if spec in ("", "id", "identity"):
        return []
    parsed = []
    for token in spec.split("-"):
        match = re.fullmatch(r"([a-z]+)(?:@(\d+))?", token)
        if match is None:
            raise ValueError(f"bad transformation token '{token}' in '{spec}'")
        parsed.append((match.group(1), int(match.group(2) or 0)))
    epochs = [epoch for _, epoch in parsed]
    if epochs != sorted(epochs):
        raise ValueError(f"curriculum epochs must not decrease along the sequence: '{spec}'")
    return parsed


class TransformSequence(nn.Module):
    """A sequence of modules with one MLP head per module and group (e.g. per layer).

    Args:
        spec: e.g. ``"col-pos"``, ``"col-proj@100-tps@350"`` (:func:`parse_sequence`).
        in_features: encoder feature size read by every head.
        groups: independent parameter sets predicted per image (layers, sprites, prototypes).
        channels: image channels (for ``col``).
        scale: input size relative to output size, for ``pos`` in ``"native_size"`` form.
        hidden: width of the two hidden layers of each head (Sec. 3.3: 128).
        position: ``pos``'s parameterisation, ``"half_canvas"`` or ``"native_size"``.
    """

    def __init__(self, spec: str, in_features: int, groups: int, channels: int = 3,
                 scale: Sequence[float] = (1.0, 1.0), hidden: int = 128,
                 position: str = "half_canvas"):
        super().__init__()
        parsed = parse_sequence(spec)
        self.names = [name for name, _ in parsed]
        self.epochs = [epoch for _, epoch in parsed]
        # How many modules are on at each epoch: "proj@150" alone has none before epoch 150.
        self.curriculum = Curriculum(self.epochs, unit="epoch")
        self.transforms = nn.ModuleList(build_transform(n, channels, scale, position)
                                        for n in self.names)
        self.heads = nn.ModuleList(GroupedMLP(groups, in_features, t.num_params, hidden)
                                   for t in self.transforms)
        # Number of modules switched on, kept in checkpoints so an evaluated model uses the
        # modules it was trained with.
        self.register_buffer("num_active", torch.tensor(0))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> int:
        """Switch on the modules whose curriculum epoch has come; returns how many are on."""
        count = int(self.curriculum(0, epoch))
        self.num_active.fill_(count)
        return count

    @property
    def active(self) -> List[Transform]:
        return list(self.transforms[: int(self.num_active)])

    @property
    def num_spatial(self) -> int:
        return sum(t.spatial for t in self.active)

    @property
    def has_spatial(self) -> bool:
        return self.num_spatial > 0

    @property
    def has_color(self) -> bool:
        return any(not t.spatial for t in self.active)

    def predict(self, features: Tensor) -> List[Tensor]:
        """``[B, groups, d]`` parameters of each active module."""
        return [head(features) for head in self.heads[: int(self.num_active)]]

    def color(self, rgb: Tensor, params: Sequence[Tensor]) -> Tensor:
        """Apply the active colour modules, in order, to ``rgb`` ``[..., C, h, w]``."""
        for transform, theta in zip(self.active, params):
            if not transform.spatial:
                rgb = transform(rgb, theta)
        return rgb

    def map_points(self, points: Tensor, params: Sequence[Tensor], padding: str = "zeros"
                   ) -> Tuple[Tensor, Tensor]:
        """Map output points ``[..., P, 2]`` to input points through the active spatial modules.

        Returns the points and ``[..., P]`` bool telling whether every intermediate point lay on
        its intermediate image (outside it, zero padding makes the sample 0). With ``"border"``
        padding intermediate points are clamped instead, as the unfused warps would do.
        """
        valid = torch.ones(points.shape[:-1], dtype=torch.bool, device=points.device)
        spatial = [(t, theta) for t, theta in zip(self.active, params) if t.spatial]
        for step, (transform, theta) in enumerate(reversed(spatial)):
            if step > 0:
                if padding == "border":
                    points = points.clamp(-1, 1)
                else:
                    valid = valid & inside(points)
            points = transform(points, theta)
        return points, valid
