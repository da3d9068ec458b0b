"""Downloading, verifying and unpacking the files of a real dataset (the machinery of the catalogue).

A dataset's :class:`Recipe` (datamodules/catalog.py) lists its files as :class:`Resource` s;
:func:`obtain` fetches each one into ``<root>/<folder>`` (or takes it from a local copy),
verifies it and unpacks archives, then the recipe's ``finish`` step arranges the files for
the datamodule.

Checksums. A file is verified against a published checksum where one is known, and the
source is named: torchvision's pinned MD5s (SVHN, Flowers images and set ids, LFW funneled),
the object-centric-library's ``check_data.py`` SHA-256s, MD5s that third-party loaders pin and
check (CUB, Flowers segmentations, LFW part labels), and the MD5 Google Cloud Storage sends in
its ``x-goog-hash`` header (DeepMind files). Every download also checks the byte count against
``Content-Length``. Where nothing is published (Google Drive copies of DTI-Sprites' data, GTSRB,
ReDO's split lists), the SHA-256 is printed and recorded in ``downloads/SHA256SUMS`` so later
runs detect a changed file; no checksum here is invented. Files already present are re-verified
instead of re-downloaded. A mismatch is an error unless checksums are not strict.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import tarfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

Log = Callable[[str], None]


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class DownloadError(RuntimeError):
    """A download failed, was truncated, or does not match its checksum."""


@dataclass(frozen=True)
class PrepareOptions:
    """How to obtain and prepare a dataset (the options of ``objdecomp data``).

    Attributes:
        source: where to get it from (a key of the dataset's recipes; None: the first listed).
        root: the dataset folder (None: ``<data root>/<name>``, where its datamodule looks).
        local_copy: use this local copy instead of downloading: the source itself for recipes
            with ``direct_input`` (a TFRecord or HDF5 file, a PNG folder), else a folder holding
            the files already downloaded by hand.
        variant: the Multi-dSprites variant (``colored_on_grayscale`` or ``colored_on_colored``).
        limit: source records to convert (multi-object sets; None: the documented default).
        verify_records: check TFRecord CRC32C checksums while converting.
        strict_checksums: a file whose checksum differs is an error (else a warning).
    """

    source: Optional[str] = None
    root: Optional[str] = None
    local_copy: Optional[str] = None
    variant: str = "colored_on_grayscale"
    limit: Optional[int] = None
    verify_records: bool = True
    strict_checksums: bool = True


@dataclass(frozen=True)
class Resource:
    """One file to fetch: stored at ``<root>/<folder>/<filename>``, unpacked into ``<root>/<extract_to>``."""

    url: str
    filename: str
    md5: Optional[str] = None
    sha256: Optional[str] = None
    checksum_from: str = ""
    folder: str = "downloads"
    extract_to: Optional[str] = None


@dataclass(frozen=True)
class Recipe:
    """How to get one dataset from one source.

    Attributes:
        resources: the files, given the options (the Multi-dSprites file depends on ``variant``).
        finish: arranges or converts the downloads in the dataset folder into the datamodule's layout.
        note: one line for ``objdecomp data --list``.
        direct_input: ``local_copy`` names the source itself (a file or folder) instead of a
            folder of already-downloaded files; nothing is then fetched.
    """

    resources: Callable[[PrepareOptions], Sequence[Resource]]
    finish: Callable[[Path, PrepareOptions, Log], None]
    note: str
    direct_input: bool = False


@dataclass(frozen=True)
class Combination:
    """A dataset whose datamodule reads other datasets of the catalogue (Flowers+LFW): preparing
    it prepares each part from its default source, in the folder the part's datamodule reads."""

    parts: Sequence[str]
    note: str


def fetch(url: str, target: Path, log: Log = log_to_stderr) -> Dict[str, str]:
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
    """md5 and sha256 hex digests of a file."""
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            for digest in digests.values():
                digest.update(chunk)
    return {name: d.hexdigest() for name, d in digests.items()}


def verify(path: Path, resource: Resource, digests: Dict[str, str], strict: bool = True,
           log: Log = log_to_stderr) -> None:
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


def extract(archive: Path, destination: Path, log: Log = log_to_stderr) -> None:
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


def obtain(recipe: Recipe, options: PrepareOptions, root: Path, log: Log = log_to_stderr) -> None:
    """Download (or take from ``options.local_copy``), verify and extract every resource of ``recipe``."""
    for resource in recipe.resources(options):
        target = root / resource.folder / resource.filename
        digests = None
        if not target.is_file() and options.local_copy:  # a folder of files downloaded by hand
            local = Path(options.local_copy).expanduser() / resource.filename
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
        verify(target, resource, digests or file_digests(target), strict=options.strict_checksums, log=log)
        if resource.extract_to is not None:
            extract(target, root / resource.extract_to, log)
