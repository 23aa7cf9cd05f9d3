"""Downloading result assets: in parallel, resumable (HTTP Range on a `.part` file), each file's size and,
when the STAC asset has one, its `file:checksum` (multihash) verified."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from upscaling_client.errors import DownloadError

CHUNK = 1 << 20
# multihash function codes → hashlib names (https://github.com/multiformats/multicodec)
MULTIHASH = {0x12: "sha256", 0x13: "sha512", 0x11: "sha1", 0xD5: "md5"}


@dataclass(frozen=True)
class Asset:
    """One file to fetch: where from, where to, and what it must be."""

    href: str
    path: Path
    size: int | None = None
    checksum: str | None = None


def assets_of(items: Iterable[dict[str, Any]], folder: Path) -> list[Asset]:
    """Every asset of the STAC items, each saved as `<folder>/<item id>/<asset name>`."""
    out = []
    for item in items:
        for name, asset in (item.get("assets") or {}).items():
            href = asset.get("href")
            if not href:
                continue
            size = asset.get("file:size")
            out.append(Asset(href, folder / item["id"] / Path(name).name,
                             size if isinstance(size, int) else None, asset.get("file:checksum")))
    return out


def _verify_checksum(path: Path, multihash: str) -> None:
    try:
        raw = bytes.fromhex(multihash)
        algorithm, length, digest = MULTIHASH[raw[0]], raw[1], raw[2:]
    except (ValueError, KeyError, IndexError):
        return  # a checksum we cannot read is not a reason to refuse the file
    actual = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            actual.update(chunk)
    if actual.digest()[:length] != digest:
        raise DownloadError(f"{path.name}: {algorithm} checksum mismatch", "DATA_LOSS")


def _total(response: httpx.Response) -> int | None:
    if response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _remote_size(http: httpx.Client, href: str) -> int | None:
    try:
        response = http.head(href)
    except httpx.HTTPError:
        return None
    return _total(response) if response.status_code == 200 else None


def fetch(http: httpx.Client, asset: Asset) -> Path:
    """Fetch one asset unless it is already complete; resume a partial download with a Range request."""
    if asset.path.exists():
        expected = asset.size if asset.size is not None else _remote_size(http, asset.href)
        if expected is None or asset.path.stat().st_size == expected:
            try:
                if asset.checksum:
                    _verify_checksum(asset.path, asset.checksum)
                return asset.path
            except DownloadError:
                asset.path.unlink()  # fetched again below
    asset.path.parent.mkdir(parents=True, exist_ok=True)
    part = asset.path.with_name(asset.path.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with http.stream("GET", asset.href, headers=headers) as response:
            if response.status_code == 416:  # the part file is already complete
                response.read()
            elif response.status_code not in (200, 206):
                response.read()
                raise DownloadError(f"GET {asset.href} answered {response.status_code}: {response.text[:300]}",
                                    "UNAVAILABLE")
            else:
                if response.status_code == 200:
                    offset = 0
                expected = _total(response)
                with part.open("r+b" if offset else "wb") as handle:
                    handle.seek(offset)
                    handle.truncate()
                    for chunk in response.iter_bytes(CHUNK):
                        handle.write(chunk)
                if expected is not None and part.stat().st_size != expected:
                    raise DownloadError(f"{asset.href}: got {part.stat().st_size} of {expected} bytes", "DATA_LOSS")
    except httpx.HTTPError as exc:
        raise DownloadError(f"GET {asset.href} failed: {exc} (run again to resume)", "UNAVAILABLE") from exc
    size = part.stat().st_size
    if asset.size is not None and size != asset.size:
        part.unlink()
        raise DownloadError(f"{asset.href}: {size} bytes, the STAC item says {asset.size}", "DATA_LOSS")
    if asset.checksum:
        try:
            _verify_checksum(part, asset.checksum)
        except DownloadError:
            part.unlink()
            raise
    os.replace(part, asset.path)
    return asset.path


def download_all(assets: list[Asset], workers: int = 8, timeout_s: float = 120.0,
                 headers: dict[str, str] | None = None) -> list[Path]:
    """Fetch every asset with `workers` parallel connections; the paths in the order of `assets`."""
    if not assets:
        return []
    with httpx.Client(timeout=timeout_s, follow_redirects=True, headers=headers) as http, \
            ThreadPoolExecutor(max_workers=max(1, min(workers, len(assets)))) as pool:
        return list(pool.map(lambda a: fetch(http, a), assets))
