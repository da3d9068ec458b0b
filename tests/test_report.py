"""``objdecomp report``: one page with every paper table, the comparison and the key figures."""

import json

import pytest
from PIL import Image

from objdecomp import report


def write_results(results, experiment, metrics):
    folder = results / experiment
    folder.mkdir(parents=True)
    (folder / "run1.json").write_text(json.dumps(
        {"experiment": experiment, "metrics": metrics, "checkpoint": "run1/last.ckpt"}))


def test_the_report_holds_every_paper_the_comparison_and_links_the_figures(tmp_path):
    results = tmp_path / "results"
    write_results(results, "dti_sprites_tetrominoes", {"test/ari_fg_dti": 0.987})
    sprites = results / "quick" / "dti_sprites_tetrominoes" / "run1" / "pictures" / "test-sprites.png"
    sprites.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(sprites)
    (results / "compare").mkdir()
    (results / "compare" / "COMPARISON.md").write_text(
        "# Cross-method comparison\n\n## Tetrominoes\n\n| method | ARI |\n|---|---|\n| MONet | 0.5 (n=1) |\n\n"
        "![the comparison as a chart](comparison.png)\n")

    page = results / "REPORT.md"
    assert report.main(["--results", str(results)]) == 0
    text = page.read_text()
    for paper in ("dti_sprites", "redo", "perturbgan", "lavae", "cis"):
        assert f"### {paper}" in text, f"{paper}'s tables are a section of the report"
    assert "98.7" in text, "our number from the results file"
    assert "### Cross-method comparison" in text and "| MONet | 0.5 (n=1) |" in text
    assert "](quick/dti_sprites_tetrominoes/run1/pictures/test-sprites.png)" in text
    assert "Not made yet: `make figure4" in text  # ReDO's Figure 4 is missing: said, with its command
    assert "](comparison.png)" not in text, "the chart is linked once, relative to the page"


def test_without_a_comparison_the_report_names_the_command(tmp_path):
    page = tmp_path / "sub" / "REPORT.md"
    report.main(["--results", str(tmp_path), "--out", str(page)])
    assert "Not run yet: `make compare`." in page.read_text()


def test_a_page_outside_the_results_folder_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="inside the results folder"):
        report.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "REPORT.md")])
