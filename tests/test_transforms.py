"""Transformation modules: identity at init, hand-computed cases, fused sequences."""

import math

import pytest
import torch

from objdecomp.nn.transforms import (Affine, Color, NativeSizePosition, Position, Projective,
                                     Similarity, ThinPlateSpline, TransformSequence,
                                     parse_sequence, pixel_grid, sample, softclip)

SPATIAL = [NativeSizePosition(), Similarity(), Affine(), Projective(), ThinPlateSpline()]


@pytest.mark.parametrize("transform", SPATIAL, ids=lambda t: type(t).__name__)
def test_spatial_modules_are_identity_at_zero(transform):
    points = torch.rand(3, 50, 2) * 2 - 1
    theta = torch.zeros(3, transform.num_params)
    assert torch.allclose(transform(points, theta), points, atol=1e-5)


def test_color_is_identity_at_zero_and_affine_per_channel():
    rgb = torch.rand(2, 3, 4, 4)
    assert torch.equal(Color(3)(rgb, torch.zeros(2, 6)), rgb)
    theta = torch.tensor([[1.0, 0.0, -0.5, 0.1, 0.2, 0.3]]).expand(2, -1)
    out = Color(3)(rgb, theta)
    assert torch.allclose(out[:, 0], 2 * rgb[:, 0] + 0.1)
    assert torch.allclose(out[:, 2], 0.5 * rgb[:, 2] + 0.3)


@pytest.mark.parametrize("spec", ["col-pos", "sim", "col-proj-tps", "aff"])
def test_sequence_with_fresh_heads_reproduces_the_image(spec):
    torch.manual_seed(0)
    sequence = TransformSequence(spec, in_features=8, groups=2, channels=3, position="native_size")
    params = sequence.predict(torch.randn(4, 8))
    assert all(p.shape[:2] == (4, 2) for p in params)
    image = torch.rand(4, 2, 3, 6, 6)
    points, valid = sequence.map_points(pixel_grid(6, 6), params)
    colored = sequence.color(image, params)
    warped = sample(colored.flatten(0, 1), points.expand(4, 2, -1, -1).flatten(0, 1), (6, 6))
    assert valid.all()
    assert torch.allclose(warped.view_as(image), image, atol=1e-5)


def test_native_size_position_keeps_pixel_size_and_translates():
    sprite = torch.rand(1, 1, 4, 4)
    position = NativeSizePosition(scale=(4 / 8, 4 / 8))
    points = position(pixel_grid(8, 8)[None], torch.zeros(1, 3))
    canvas = sample(sprite, points, (8, 8))[0, 0]
    assert torch.allclose(canvas[2:6, 2:6], sprite[0, 0], atol=1e-6)  # centred, native size
    assert canvas[:2].abs().max() < 1e-6 and canvas[:, 6:].abs().max() < 1e-6
    # t_x = 0.5 (a quarter of the canvas width, 2 pixels) moves the sprite right.
    points = position(pixel_grid(8, 8)[None], torch.tensor([[0.0, 0.5, 0.0]]))
    canvas = sample(sprite, points, (8, 8))[0, 0]
    assert torch.allclose(canvas[2:6, 4:8], sprite[0, 0], atol=1e-6)
    # s = log 2 doubles the displayed size.
    points = position(pixel_grid(8, 8)[None], torch.tensor([[math.log(2), 0.0, 0.0]]))
    canvas = sample(torch.ones(1, 1, 4, 4), points, (8, 8))[0, 0]
    assert canvas[1:7, 1:7].min() > 0.99


@pytest.mark.parametrize("sprite_side", [4, 8, 24])
def test_position_starts_over_the_central_half_of_the_canvas_whatever_the_sprite_size(sprite_side):
    """#14 item 4: the authors' pos, θ = (1 + e^s)·I + t, is 2I at zero parameters."""
    canvas_side = 8
    sprite = torch.ones(1, 1, sprite_side, sprite_side)
    points = Position()(pixel_grid(canvas_side, canvas_side)[None], torch.zeros(1, 3))
    canvas = sample(sprite, points, (canvas_side, canvas_side))[0, 0]
    inside = torch.zeros(canvas_side, canvas_side, dtype=torch.bool)
    inside[2:6, 2:6] = True
    assert torch.allclose(canvas[inside], torch.ones(16)) and canvas[~inside].abs().max() < 1e-6


def test_position_placement_round_trips_and_never_exceeds_the_canvas():
    centre, size = torch.tensor([[0.5, -0.25]]), torch.tensor([0.5])
    theta = Position.placed(centre, size)
    got_centre, got_size = Position.placement(theta)
    assert torch.allclose(got_centre, centre) and torch.allclose(got_size, size)
    sprite = torch.ones(1, 1, 4, 4)  # size 0.5 of an 8-pixel canvas, centred at x = +0.5, y = -0.25
    canvas = sample(sprite, Position()(pixel_grid(8, 8)[None], theta), (8, 8))[0, 0]
    assert canvas[1:5, 4:8].min() > 0.99 and canvas.sum() == pytest.approx(16, abs=1e-4)
    assert Position.placement(torch.tensor([[5.0, 0, 0], [-5.0, 0, 0]]))[1].max() < 1
    native = NativeSizePosition(scale=(0.5, 0.5))
    assert torch.allclose(native.placement(native.placed(centre, size))[1], size)


def test_similarity_rotates_a_quarter_turn():
    # a = −1, b = 1: q = [[0, −1], [1, 0]] p, sampling (x, y) at (−y, x).
    points = torch.tensor([[[0.5, 0.0], [0.0, 0.25]]])
    q = Similarity()(points, torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))
    assert torch.allclose(q, torch.tensor([[[0.0, 0.5], [-0.25, 0.0]]]))


def test_projective_without_perspective_is_affine():
    beta = torch.randn(2, 6) * 0.1
    points = torch.rand(2, 20, 2) * 2 - 1
    proj = Projective()(points, torch.cat([beta, torch.zeros(2, 3)], 1))
    assert torch.allclose(proj, Affine()(points, beta), atol=1e-6)


def test_tps_interpolates_controls_and_reproduces_affine_maps():
    tps = ThinPlateSpline(grid=4)
    beta = torch.randn(1, 32) * 0.1
    moved = tps(tps.controls[None], beta)
    assert torch.allclose(moved, tps.controls + beta.view(16, 2), atol=1e-4)
    matrix = torch.tensor([[0.1, -0.2], [0.05, 0.15]])
    affine_beta = (tps.controls @ matrix.T + torch.tensor([0.1, -0.3])).reshape(1, 32)
    points = torch.rand(1, 30, 2) * 2 - 1
    expected = points + points @ matrix.T + torch.tensor([0.1, -0.3])
    assert torch.allclose(tps(points, affine_beta), expected, atol=1e-4)


def test_fused_sequence_flags_points_off_the_intermediate_image():
    sequence = TransformSequence("sim-pos", in_features=4, groups=1, position="native_size")
    # pos (applied last to the image, so first to the points) at scale 1, no shift; sim shrinks
    # by 2 (a = 1 in backward form doubles the coordinates): intermediate points stay inside,
    # so validity is all True; final points leave the sprite where |p| > 0.5.
    sim, pos = torch.tensor([[[1.0, 0, 0, 0]]]), torch.zeros(1, 1, 3)
    points, valid = sequence.map_points(pixel_grid(4, 4), [sim, pos])
    assert valid.all() and torch.allclose(points, 2 * pixel_grid(4, 4))
    # Now pos shrinks by 2 (s = −log 2): the intermediate image covers the centre only.
    pos = torch.tensor([[[-math.log(2), 0.0, 0.0]]])
    _, valid = sequence.map_points(pixel_grid(4, 4), [torch.zeros(1, 1, 4), pos])
    assert valid.view(4, 4)[1:3, 1:3].all() and not valid.view(4, 4)[0].any()


def test_curriculum_switches_modules_on_in_order():
    sequence = TransformSequence("col-proj@2-tps@5", in_features=4, groups=1)
    assert parse_sequence("col-proj@2-tps@5") == [("col", 0), ("proj", 2), ("tps", 5)]
    assert [sequence.set_epoch(e) for e in (0, 1, 2, 4, 5, 9)] == [1, 1, 2, 2, 3, 3]
    assert len(sequence.predict(torch.randn(2, 4))) == 3


@pytest.mark.parametrize("spec, boundaries", [
    ("sim@20", {0: 0, 19: 0, 20: 1, 21: 1}),  # Multi-dSprites: identity_similarity, [20]
    ("proj@150", {0: 0, 149: 0, 150: 1}),  # CLEVR6: identity_projective, [150]
    ("proj@3-tps@5", {0: 0, 2: 0, 3: 1, 4: 1, 5: 2}),
])
def test_a_sequence_whose_first_module_carries_an_epoch_starts_with_none_on(spec, boundaries):
    """#14 item 1: the authors' sequences start with an identity module; nothing is trained
    before the first module's epoch."""
    sequence = TransformSequence(spec, in_features=4, groups=1)
    assert int(sequence.num_active) == 0 and sequence.predict(torch.randn(2, 4)) == []
    assert {e: sequence.set_epoch(e) for e in boundaries} == boundaries
    points = pixel_grid(3, 3)
    sequence.set_epoch(0)
    assert torch.equal(sequence.map_points(points, [])[0], points)
    with pytest.raises(ValueError):
        parse_sequence("tps@5-col@1")
    with pytest.raises(ValueError):
        TransformSequence("col-warp", in_features=4, groups=1)


def test_softclip_is_identity_inside_and_leaky_outside():
    x = torch.tensor([-1.0, 0.3, 2.0], requires_grad=True)
    y = softclip(x)
    assert torch.allclose(y, torch.tensor([-0.01, 0.3, 1.01]))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.01, 1.0, 0.01]))


def test_heads_receive_gradients_through_the_warp():
    sequence = TransformSequence("col-sim", in_features=4, groups=1)
    params = sequence.predict(torch.randn(2, 4))
    points, _ = sequence.map_points(pixel_grid(5, 5), params)
    image = sequence.color(torch.rand(2, 1, 3, 5, 5), params)
    out = sample(image.flatten(0, 1), points.flatten(0, 1), (5, 5))
    out.square().mean().backward()
    assert all(head.weight3.grad is not None and head.weight3.grad.abs().sum() > 0
               for head in sequence.heads)
