"""DTI-Sprites' evaluation protocol as its authors' code scores it (#14 items 2, 7, 8)."""

import torch
import yaml

from objdecomp.metrics import ARIFGDTI, BestPermutationForeground, MatchedForegroundAccuracy
from objdecomp.metrics.functional import frontmost_labels
from objdecomp.paths import EXPERIMENTS
from objdecomp.types import Decomposition


def _one_hot(segmentation: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(segmentation, k).permute(0, 3, 1, 2).float()


def test_ari_fg_dti_reassigns_background_pixels_to_empty_layers_too():
    """Item 7: the second object layer holds the empty sprite, but its colour (green) is the
    closest to the pixels predicted as background, so they go to it, as in the authors' code."""
    red, green = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])
    image = torch.stack([red, red, green, green], 1).view(1, 3, 2, 2)
    segmentation = torch.tensor([[[1, 1], [0, 0]]])  # the green half predicted as background
    layers = torch.stack([torch.zeros(3), red, green])[None, :, :, None, None].expand(1, 3, 3, 2, 2)
    decomposition = Decomposition(image, _one_hot(segmentation, 3), torch.tensor([True, False, False]),
                                  layers, classes=torch.tensor([[0, 1, 0]]))  # layer 2 empty
    batch = {"image": image, "mask": torch.tensor([[[1, 1], [2, 2]]])}
    metric = ARIFGDTI(num_background=1)
    metric.update(batch, decomposition.check(image))
    assert metric.compute()[""].item() == 1.0


def test_table_4_accuracy_matches_roles_once_over_the_whole_split():
    """Item 2: the authors' Weizmann Horse accuracy is one Hungarian match of one 2x2 confusion
    matrix over the dataset, not the best assignment per image (which credits inverted masks)."""
    truth = torch.tensor([[[0, 1], [0, 1]], [[0, 1], [0, 1]]])
    inverted = torch.tensor([[[0, 1], [0, 1]], [[1, 0], [1, 0]]])  # image 2 predicted inverted
    image = torch.rand(2, 3, 2, 2)
    decomposition = Decomposition(image, _one_hot(inverted, 2), torch.tensor([True, False]))
    batch = {"image": image, "mask": truth}
    global_match, per_image = MatchedForegroundAccuracy(), BestPermutationForeground()
    global_match.update(batch, decomposition)
    per_image.update(batch, decomposition)
    assert global_match.compute()[""].item() == 0.5
    assert per_image.compute()["acc"].item() == 1.0
    swapped = Decomposition(image, _one_hot(1 - truth, 2), torch.tensor([True, False]))
    metric = MatchedForegroundAccuracy()
    metric.update(batch, swapped)
    assert metric.compute()[""].item() == 1.0  # one swap of the roles for the whole split
    tables = yaml.safe_load((EXPERIMENTS / "paper_tables.yaml").read_text())["dti_sprites"]
    horse = [c for t in tables for c in t["cells"] if c["experiment"] == "dti_sprites_weizmann_horse"]
    assert [c["key"] for c in horse] == ["test/fg_global"]


def test_frontmost_labels_take_the_unoccluded_layer_whose_mask_exceeds_one_half():
    """Item 8: pixels (A, B, C, D); layer 1 occludes layer 2 (δ = 0.7 > 0.5)."""
    alphas = torch.tensor([[0.9, 0.4, 0.4, 0.6], [0.9, 0.9, 0.4, 0.2]]).view(1, 2, 1, 4)
    occlusion = torch.tensor([[[0.0, 0.7], [0.3, 0.0]]])
    assert frontmost_labels(alphas, occlusion).flatten().tolist() == [1, 2, 0, 1]
    in_front = torch.tensor([[[0.0, 0.2], [0.8, 0.0]]])  # layer 2 occludes layer 1
    assert frontmost_labels(alphas, in_front).flatten().tolist() == [2, 2, 0, 1]


def _write_run(folder, experiment, run, metrics):
    import json

    path = folder / experiment / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"experiment": experiment, "run": run, "checkpoint": f"{run}.ckpt",
                                "metrics": metrics}))


def test_tables_leave_the_papers_outlier_run_out_and_show_what_moved(tmp_path, capsys):
    """Item 9: Multi-dSprites' cells leave out one run whose reconstruction error is an outlier
    (the paper's 1.93e-3 against 1.49-1.57e-3), stated in the table's note; every moved cell
    says what changed in a note column."""
    from objdecomp.tables import main, outlier_run

    errors = [1.93e-3, 1.51e-3, 1.49e-3, 1.52e-3, 1.57e-3]
    for i, error in enumerate(errors):
        ari = 0.50 if i == 0 else 0.95
        metrics = {"test/ari": ari, "test/recon_mse": error}
        _write_run(tmp_path, "dti_sprites_multi_dsprites", f"r{i}", metrics)
    main(["--results", str(tmp_path), "--method", "dti_sprites"])
    text = (tmp_path / "TABLES.md").read_text()
    capsys.readouterr()
    assert "| Multi-dSprites | ARI | 95.1 ± 0.1 | 95.0 ± 0.0 (n=4, 1 outlier left out) |" in text
    assert "| Multi-dSprites full | ARI | 95.0 ± 0.3 | 86.0 ± 20.1 (n=5) |" in text  # Table 2: all 5
    assert "more than 20%" in text and "DeepMind's first 60k records" in text
    runs = [{"test/recon_mse": e} for e in errors]
    assert outlier_run(runs, "test/recon_mse") == 0
    assert outlier_run(runs[1:], "test/recon_mse") is None  # no outlier among the four
    assert outlier_run(runs[:2], "test/recon_mse") is None  # too few runs to tell
