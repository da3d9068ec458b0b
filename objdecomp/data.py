"""``objdecomp data``: download, verify and prepare the real datasets.

    objdecomp data --list
    objdecomp data <name> [--source S] [--root DIR] [--from PATH] [--variant V] [--limit N]
                          [--no-verify] [--no-checksum]

Files go to ``<root>/downloads`` (``root`` defaults to ``$OBJDECOMP_DATA/<name>``, where the
datamodule looks), archives are extracted, and the dataset is arranged or converted into the
layout its datamodule reads (datamodules/*.py document each). ``--from`` skips the download and
uses a local copy of the source (a TFRecord or HDF5 file, or an extracted folder).

Checksums. A file is verified against a published checksum where one is known, and the
source is named: torchvision's pinned MD5s (SVHN, Flowers images and set ids, LFW funneled),
the object-centric-library's ``check_data.py`` SHA-256s, MD5s that third-party loaders pin and
check (CUB, Flowers segmentations, LFW part labels), and the MD5 Google Cloud Storage sends in
its ``x-goog-hash`` header (DeepMind files). Every download also checks the byte count against
``Content-Length``. Where nothing is published (Google Drive copies of DTI-Sprites' data, GTSRB,
ReDO's split lists), the SHA-256 is printed and recorded in ``downloads/SHA256SUMS`` so later
runs detect a changed file; no checksum here is invented. Files already present are re-verified
instead of re-downloaded. A mismatch is an error; ``--no-checksum`` accepts the file anyway.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

from objdecomp.data_catalog import RECIPES, Recipe, Resource
from objdecomp.paths import data_root


class DownloadError(RuntimeError):
    """A download failed, was truncated, or does not match its checksum."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch(url: str, target: Path, log=_log) -> Dict[str, str]:
    """Download ``url`` to ``target`` (via ``target.part``) with progress; returns md5/sha256 hex digests.

    Raises:
        DownloadError: HTTP/URL errors, an HTML page instead of a file (Google Drive's quota or
            confirmation page), a size different from ``Content-Length``, or a GCS ``x-goog-hash``
            MD5 mismatch.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    request = urllib.request.Request(url, headers={"User-Agent": "objdecomp-data"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            if "text/html" in response.headers.get("Content-Type", "") and not url.endswith(".html"):
                raise DownloadError(f"{url} returned a web page, not {target.name} (for Google Drive: "
                                    "quota or confirmation page); download it in a browser and pass --from")
            done, last = 0, 0.0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                for digest in digests.values():
                    digest.update(chunk)
                done += len(chunk)
                if time.time() - last > 2 or done == total:
                    last = time.time()
                    share = f" {100 * done / total:5.1f}%" if total else ""
                    log(f"  {target.name}: {done / 1e6:,.1f} MB{share}")
            goog = response.headers.get("x-goog-hash", "")
    except OSError as error:  # URLError, HTTPError, timeouts
        part.unlink(missing_ok=True)
        raise DownloadError(f"cannot download {url}: {error}") from error
    if total and done != total:
        raise DownloadError(f"{url}: got {done} of {total} bytes (truncated download)")
    hexes = {name: d.hexdigest() for name, d in digests.items()}
    server_md5 = [v[4:] for v in goog.replace(" ", "").split(",") if v.startswith("md5=")]
    if server_md5 and base64.b64decode(server_md5[0]).hex() != hexes["md5"]:
        raise DownloadError(f"{url}: MD5 differs from the server's x-goog-hash (corrupt transfer)")
    part.replace(target)
    return hexes


def file_digests(path: Path) -> Dict[str, str]:
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            for digest in digests.values():
                digest.update(chunk)
    return {name: d.hexdigest() for name, d in digests.items()}


def verify(path: Path, resource: Resource, digests: Dict[str, str], strict: bool = True, log=_log) -> None:
    """Compare with the published checksum, else with (or record into) ``SHA256SUMS``."""
    kind = "sha256" if resource.sha256 else "md5" if resource.md5 else None
    sums = path.parent / "SHA256SUMS"
    if kind is None:
        recorded = _recorded(sums).get(path.name)
        if recorded is None:
            with open(sums, "a") as handle:
                handle.write(f"{digests['sha256']}  {path.name}\n")
            log(f"  {path.name}: no published checksum; sha256 {digests['sha256']} recorded in {sums}")
            return
        kind, expected, origin = "sha256", recorded, f"recorded in {sums} at its first download"
    else:
        expected, origin = getattr(resource, kind), resource.checksum_from
    if digests[kind] == expected:
        log(f"  {path.name}: {kind} matches ({origin})")
        return
    message = (f"{path}: {kind} {digests[kind]} != {expected} ({origin}). Delete the file to download "
               "it again, or pass --no-checksum to accept it.")
    if strict:
        raise DownloadError(message)
    log(f"  warning: {message}")


def _recorded(sums: Path) -> Dict[str, str]:
    """``{file name: sha256}`` from a ``sha256sum``-format file."""
    if not sums.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in sums.read_text().splitlines() if line.strip())
    return {name.strip().lstrip("*"): digest for digest, name in pairs}


def extract(archive: Path, destination: Path, log=_log) -> None:
    """Unpack a .zip/.tar(.gz) archive, refusing members that would land outside ``destination``."""
    log(f"  extracting {archive.name} into {destination}")
    destination.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            root = destination.resolve()
            for name in zipped.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise DownloadError(f"{archive}: unsafe member path {name!r}")
            zipped.extractall(destination)
    else:
        with tarfile.open(archive) as tarred:
            tarred.extractall(destination, filter="data")


def obtain(recipe: Recipe, args: argparse.Namespace, root: Path, log=_log) -> None:
    """Download (or take from ``--from``), verify and extract every resource of ``recipe``."""
    for resource in recipe.resources(args):
        target = root / resource.folder / resource.filename
        digests = None
        if not target.is_file() and args.input:  # a folder of files downloaded by hand
            local = Path(args.input).expanduser() / resource.filename
            if not local.is_file():
                raise DownloadError(f"{local} not found (--from names a folder holding {resource.filename})")
            if resource.extract_to is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(local, target)
            else:
                target = local  # unpack straight from there
        elif not target.is_file():
            log(f"  downloading {resource.url}")
            digests = fetch(resource.url, target, log)
        else:
            log(f"  {target} present; verifying")
        verify(target, resource, digests or file_digests(target), strict=not args.no_checksum, log=log)
        if resource.extract_to is not None:
            extract(target, root / resource.extract_to, log)


def run(name: str, args: argparse.Namespace, log=_log) -> Path:
    """Obtain and prepare dataset ``name``; returns its root folder."""
    sources = RECIPES[name]
    source = args.source or next(iter(sources))
    if source not in sources:
        raise SystemExit(f"{name}: unknown source {source!r}; choose from {', '.join(sources)}")
    recipe = sources[source]
    root = Path(args.root).expanduser() if args.root else data_root() / name
    log(f"{name} ({source}) -> {root}")
    if not (recipe.direct_input and args.input):
        obtain(recipe, args, root, log)
    recipe.finish(root, args, log)
    log(f"{name}: ready in {root}")
    return root


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objdecomp data", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="dataset name (see --list)")
    p.add_argument("--list", action="store_true", help="list the datasets and their sources")
    p.add_argument("--source", help="where to get it from (default: the first listed)")
    p.add_argument("--root", help="dataset folder (default: $OBJDECOMP_DATA/<name>)")
    p.add_argument("--from", dest="input", help="use this local copy instead of downloading")
    p.add_argument("--variant", default="colored_on_grayscale", help="Multi-dSprites variant")
    p.add_argument("--limit", type=int, help="source records to convert (multi-object sets)")
    p.add_argument("--no-verify", action="store_true", help="skip TFRecord CRC32C checks (faster)")
    p.add_argument("--no-checksum", action="store_true", help="accept files whose checksum differs")
    return p


def listing() -> List[str]:
    lines = []
    for name, sources in RECIPES.items():
        for i, (source, recipe) in enumerate(sources.items()):
            head = f"{name:24s}" if i == 0 else " " * 24
            lines.append(f"{head} {source + (' (default)' if i == 0 else ''):22s} {recipe.note}")
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``objdecomp data``."""
    args = parser().parse_args(argv)
    if args.list or not args.name:
        print("\n".join(listing()))
        return
    if args.name not in RECIPES:
        raise SystemExit(f"unknown dataset {args.name!r}; `objdecomp data --list` shows them")
    try:
        run(args.name, args)
    except DownloadError as error:
        raise SystemExit(f"error: {error}") from error


