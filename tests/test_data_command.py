"""``objdecomp data``: downloads (over a local HTTP server), checksums, extraction, preparation."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from datamodules.deepmind import DeepMindTetrominoesDataModule
from datamodules.registry import registry
from datamodules.svhn import SVHNDataModule
from datamodules.weizmann_horse import WeizmannHorseDataModule
from datamodules import catalog, download
from datamodules.catalog import RECIPES
from datamodules.download import Combination, PrepareOptions, Recipe, Resource
from objdecomp import data
from tests.fixtures import deepmind as dm_fixtures
from tests.fixtures import images as img_fixtures

PAYLOAD = bytes(range(256)) * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body, headers = PAYLOAD, {"Content-Type": "application/octet-stream"}
        if self.path == "/goog-ok":
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            headers["x-goog-hash"] = f"crc32c=AAAAAA==, md5={md5}"
        elif self.path == "/goog-bad":
            headers["x-goog-hash"] = "md5=" + base64.b64encode(hashlib.md5(b"other").digest()).decode()
        elif self.path == "/html":
            body, headers = b"<html>quota exceeded</html>", {"Content-Type": "text/html; charset=utf-8"}
        elif self.path == "/missing":
            self.send_error(404)
            return
        self.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_fetch_checks_size_server_md5_and_html(server, tmp_path):
    digests = download.fetch(f"{server}/goog-ok", tmp_path / "file.bin", log=lambda _: None)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert digests == {"md5": hashlib.md5(PAYLOAD).hexdigest(), "sha256": hashlib.sha256(PAYLOAD).hexdigest()}
    with pytest.raises(download.DownloadError, match="x-goog-hash"):
        download.fetch(f"{server}/goog-bad", tmp_path / "bad.bin", log=lambda _: None)
    assert not (tmp_path / "bad.bin").exists()
    with pytest.raises(download.DownloadError, match="web page"):
        download.fetch(f"{server}/html", tmp_path / "page.zip", log=lambda _: None)
    with pytest.raises(download.DownloadError, match="404"):
        download.fetch(f"{server}/missing", tmp_path / "gone.bin", log=lambda _: None)


def test_published_checksum_is_enforced(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    good = Resource("u", "f.bin", md5=hashlib.md5(PAYLOAD).hexdigest(), checksum_from="a test")
    download.verify(path, good, download.file_digests(path), log=lambda _: None)
    bad = Resource("u", "f.bin", sha256="0" * 64, checksum_from="a test")
    with pytest.raises(download.DownloadError, match=r"a test.*--no-checksum"):
        download.verify(path, bad, download.file_digests(path), log=lambda _: None)
    warnings = []
    download.verify(path, bad, download.file_digests(path), strict=False, log=warnings.append)
    assert "warning" in warnings[0]


def test_unpublished_checksum_is_recorded_then_checked(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    download.verify(path, Resource("u", "f.bin"), download.file_digests(path), log=lambda _: None)
    assert (tmp_path / "SHA256SUMS").read_text() == f"{hashlib.sha256(PAYLOAD).hexdigest()}  f.bin\n"
    # unchanged: fine
    download.verify(path, Resource("u", "f.bin"), download.file_digests(path), log=lambda _: None)
    path.write_bytes(PAYLOAD[:-1])
    with pytest.raises(download.DownloadError, match="recorded"):
        download.verify(path, Resource("u", "f.bin"), download.file_digests(path), log=lambda _: None)


def test_extract_tar_and_refuse_unsafe_zip(tmp_path):
    archive = tmp_path / "a.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("top/file.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    download.extract(archive, tmp_path / "out", log=lambda _: None)
    assert (tmp_path / "out/top/file.txt").read_text() == "hello"
    unsafe = tmp_path / "evil.zip"
    with zipfile.ZipFile(unsafe, "w") as zipped:
        zipped.writestr("../escape.txt", "x")
    with pytest.raises(download.DownloadError, match="unsafe"):
        download.extract(unsafe, tmp_path / "out2", log=lambda _: None)


def test_every_recipe_has_a_datamodule_and_list_shows_it(capsys):
    names = registry()
    assert set(RECIPES) <= set(names)
    data.main(["--list"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in RECIPES)
    with pytest.raises(SystemExit, match="unknown dataset"):
        data.main(["no_such_set"])
    with pytest.raises(SystemExit, match="unknown source 'nowhere'; choose from official"):
        data.main(["flowers", "--source", "nowhere"])


def test_command_line_options_reach_the_data_layer():
    args = data.parser().parse_args(["clevr6", "--source", "ocl", "--root", "r", "--from", "f.hdf5",
                                     "--limit", "7", "--no-verify", "--no-checksum"])
    assert data.options_from(args) == PrepareOptions(
        source="ocl", root="r", local_copy="f.hdf5", limit=7, verify_records=False, strict_checksums=False)
    assert data.options_from(data.parser().parse_args(["clevr6"])) == PrepareOptions()


def test_flowers_lfw_prepares_each_part_in_its_own_folder(tmp_path, monkeypatch):
    prepared = []
    part = Recipe(lambda options: [], lambda root, options, log: prepared.append((root, options)), "a part")
    monkeypatch.setitem(RECIPES, "flowers", {"official": part})
    monkeypatch.setitem(RECIPES, "lfw", {"official": part})
    assert isinstance(RECIPES["flowers_lfw"]["official"], Combination)
    options = PrepareOptions(root=str(tmp_path), limit=3)
    assert catalog.prepare("flowers_lfw", options, log=lambda _: None) == tmp_path
    assert [root for root, _ in prepared] == [tmp_path / "flowers", tmp_path / "lfw"]
    assert all(o.limit == 3 and o.source is None for _, o in prepared)  # each part's default source
    prepared.clear()
    monkeypatch.setenv("OBJDECOMP_DATA", str(tmp_path / "data_root"))
    catalog.prepare("flowers_lfw", PrepareOptions(), log=lambda _: None)  # where the datamodule looks
    assert [root for root, _ in prepared] == [tmp_path / "data_root" / "flowers", tmp_path / "data_root" / "lfw"]


def test_prepare_multi_object_from_a_local_tfrecord(tmp_path):
    rng = np.random.default_rng(0)
    scenes = [dm_fixtures.make_scene("tetrominoes", 3, rng) for _ in range(3)]
    source = dm_fixtures.write_tfrecord(tmp_path / "tetrominoes_train.tfrecords", "tetrominoes", scenes)
    data.main(["deepmind_tetrominoes", "--root", str(tmp_path / "tetro"), "--from", str(source)])
    module = DeepMindTetrominoesDataModule(root=str(tmp_path / "tetro"))
    module.setup("test")
    np.testing.assert_array_equal(module.datasets["test"][2]["mask"].numpy(), scenes[2].ids)


def test_svhn_from_folder_enforces_torchvision_md5(tmp_path):
    img_fixtures.write_svhn(tmp_path / "manual", {"train": 2, "test": 2, "extra": 1})
    args = ["svhn", "--root", str(tmp_path / "svhn"), "--from", str(tmp_path / "manual")]
    with pytest.raises(SystemExit, match="torchvision"):  # a fixture is not the real file
        data.main(args)
    data.main(args + ["--no-checksum"])
    module = SVHNDataModule(root=str(tmp_path / "svhn"))
    module.setup("test")
    assert len(module.datasets["test"]) == 4


def test_weizmann_zip_is_extracted_and_hoisted(tmp_path):
    masks = img_fixtures.write_weizmann(tmp_path / "src" / "weizmann_horse", 2)
    (tmp_path / "manual").mkdir()
    with zipfile.ZipFile(tmp_path / "manual" / "weizmann_horse.zip", "w") as zipped:
        for path in (tmp_path / "src").rglob("*.*"):
            zipped.write(path, path.relative_to(tmp_path / "src"))
    root = tmp_path / "horse"
    data.main(["weizmann_horse", "--root", str(root), "--from", str(tmp_path / "manual")])
    assert (root / "images").is_dir() and not (root / "weizmann_horse").exists()
    assert "weizmann_horse.zip" in (tmp_path / "manual" / "SHA256SUMS").read_text()
    module = WeizmannHorseDataModule(root=str(root))
    module.setup("test")
    np.testing.assert_array_equal(module.datasets["test"][1]["mask"].numpy(), masks[1])


def test_redo_split_sizes_are_checked_against_the_paper(tmp_path):
    img_fixtures.write_flowers(tmp_path / "flowers", {"trnid": [1], "valid": [2], "tstid": [3]})
    recipe = RECIPES["flowers"]["official"]
    with pytest.raises(RuntimeError, match="differ from the paper"):
        recipe.finish(tmp_path / "flowers", PrepareOptions(), lambda _: None)
