"""objdecomp tables: our column from results files, 'not run' otherwise, the paper's beside."""

import json

import yaml

from objdecomp.tables import TABLES_FILE, collect, main


def write_run(folder, experiment, run, metrics, checkpoint="run/checkpoints/last.ckpt"):
    path = folder / experiment / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"experiment": experiment, "run": run, "metrics": metrics,
                                "checkpoint": checkpoint}))


def test_tables_show_mean_std_count_and_not_run(tmp_path, capsys):
    write_run(tmp_path, "dti_sprites_tetrominoes", "a", {"test/ari": 0.90, "test/ari_fg_dti": 0.5})
    write_run(tmp_path, "dti_sprites_tetrominoes", "b", {"test/ari": 0.96, "test/ari_fg_dti": 0.7})
    (tmp_path / "dti_sprites_tetrominoes" / "wandb-metadata.json").write_text("{not json")
    # An untrained model's scores (objdecomp test without a checkpoint) never enter a table.
    write_run(tmp_path, "dti_sprites_tetrominoes", "untrained", {"test/ari": 0.0}, checkpoint=None)
    assert len(collect(tmp_path)["dti_sprites_tetrominoes"]) == 2
    main(["--results", str(tmp_path), "--method", "dti_sprites"])
    text = (tmp_path / "TABLES.md").read_text()
    assert "| Tetrominoes | ARI | 99.8 ± 0.1 | 93.0 ± 4.2 (n=2) |" in text
    assert "| CLEVR6 | ARI | 90.7 ± 0.1 | not run |" in text
    assert "redo" not in text and text in capsys.readouterr().out


def test_train_split_cells_fill_from_train_results_and_name_their_split(tmp_path, capsys):
    write_run(tmp_path, "redo_cub", "a", {"test/fg_best_iou": 0.40})
    write_run(tmp_path, "redo_cub", "a.train", {"train/fg_best_iou": 0.45})
    main(["--results", str(tmp_path), "--method", "redo"])
    text = (tmp_path / "TABLES.md").read_text()
    assert "| CUB | train IoU | 0.423 ± 0.023 | 0.450 (n=1) |" in text
    assert "| CUB | test IoU | 0.426 ± 0.025 | 0.400 (n=1) |" in text
    capsys.readouterr()
    main(["--splits", "redo_cub"])
    assert capsys.readouterr().out.split() == ["test", "train"]
    main(["--splits", "dti_sprites_clevr6"])
    assert capsys.readouterr().out.split() == ["test"]
    main(["--results", str(tmp_path), "--experiment", "redo_cub"])
    shown = capsys.readouterr().out
    assert "| CUB | train IoU |" in shown and "Flowers" not in shown
    main(["--results", str(tmp_path), "--experiment", "quick/redo_cub"])
    assert "no paper table cell reads quick/redo_cub" in capsys.readouterr().out


def test_every_paper_has_its_tables_and_every_cell_names_what_fills_it():
    from objdecomp.cli import experiment_names
    from objdecomp.methods.perturbgan.baselines import BASELINES

    tables = yaml.safe_load(TABLES_FILE.read_text())
    assert list(tables) == ["dti_sprites", "redo", "perturbgan", "lavae", "cis"]  # the five papers
    known = set(experiment_names())
    baselines = {f"{name}_{b}" for name in known for b in BASELINES}
    for method_tables in tables.values():
        for table in method_tables:
            for c in table["cells"]:
                assert c["experiment"] in known | baselines or "no such experiment" in c.get("note", ""), c
                assert "/" in c["key"] and c["paper"], c
