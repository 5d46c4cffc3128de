"""The catalog of public prior networks, the download cache and :func:`resolve_prior`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grnvae.errors import GRNError
from grnvae.tables import stem
from grnvae.utils import PathLike, atomic_write, atomic_write_text
from grnvae.priors.values import _preview
from grnvae.priors import readers as _readers
from grnvae.priors.readers import _format_name

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Catalog, cache, download
# --------------------------------------------------------------------------------------------

_REQUIRED_FIELDS = ("url", "license", "format", "sha256", "citation", "species", "description")


@dataclass(frozen=True)
class CatalogEntry:
    """One public prior network of ``priors/catalog.yaml``.

    ``sha256`` may be None (not yet recorded by a maintainer): :func:`download` then refuses
    the file unless ``allow_unverified=True``. ``filename`` is the name in the cache;
    ``member`` the file to read inside a downloaded .zip archive; ``options`` are reader
    keyword defaults (e.g. ``levels`` for DoRothEA, ``case`` for mouse symbols).
    """

    name: str
    url: str
    license: str
    format: str
    sha256: str | None
    citation: str
    species: str
    description: str
    filename: str
    member: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def catalog_path() -> Path:
    """``$GRNVAE_PRIOR_CATALOG``, else the built-in ``priors/catalog.yaml``
    (:func:`grnvae.utils.builtin_dir`)."""
    from grnvae.utils import builtin_dir

    env = os.environ.get("GRNVAE_PRIOR_CATALOG")
    if env:
        return Path(env).expanduser()
    return builtin_dir("priors") / "catalog.yaml"


def _check_sha256(value: Any, where: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise GRNError(f"{where}: sha256 {value!r} is not 64 hexadecimal digits")
    return text


def _url_filename(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    return urllib.parse.unquote(name)


def catalog(path: PathLike | None = None) -> dict[str, CatalogEntry]:
    """The public prior networks, name -> :class:`CatalogEntry` (``priors/catalog.yaml``)."""
    import yaml

    path = Path(path).expanduser() if path is not None else catalog_path()
    if not path.is_file():
        raise GRNError(f"prior catalog {path} not found; set $GRNVAE_PRIOR_CATALOG to a "
                       "catalog file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GRNError(f"prior catalog {path}: invalid YAML ({exc})") from None
    entries = raw.get("priors") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise GRNError(f"prior catalog {path}: expected a top-level 'priors:' mapping of "
                       "name -> entry")
    out: dict[str, CatalogEntry] = {}
    files: dict[str, str] = {}
    for name, entry in entries.items():
        where = f"prior catalog {path}, entry {name!r}"
        if not isinstance(entry, dict):
            raise GRNError(f"{where}: expected a mapping of fields")
        missing = [f for f in _REQUIRED_FIELDS if f not in entry]
        if missing:
            raise GRNError(f"{where}: missing field(s) {', '.join(missing)} (required: "
                           f"{', '.join(_REQUIRED_FIELDS)}; sha256 may be null)")
        fmt = _format_name(entry["format"])
        _check_scheme(str(entry["url"]), where)
        filename = str(entry.get("filename") or _url_filename(str(entry["url"])) or name)
        if filename in files:
            raise GRNError(f"{where}: filename {filename!r} is also used by {files[filename]!r}")
        files[filename] = name
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise GRNError(f"{where}: options must be a mapping")
        out[str(name)] = CatalogEntry(
            name=str(name), url=str(entry["url"]), license=str(entry["license"]), format=fmt,
            sha256=_check_sha256(entry["sha256"], where), citation=str(entry["citation"]),
            species=str(entry["species"]), description=str(entry["description"]).strip(),
            filename=filename, options=dict(options),
            member=None if entry.get("member") is None else str(entry["member"]),
        )
    return out


def default_cache_dir(path: PathLike | None = None) -> Path:
    """Where downloaded priors go: ``path``, else ``$GRNVAE_CACHE/priors``, else
    ``~/.cache/grnvae/priors``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("GRNVAE_CACHE")
    if env:
        return Path(env).expanduser() / "priors"
    return Path.home() / ".cache" / "grnvae" / "priors"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    name: str,
    cache_dir: PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    *,
    allow_unverified: bool = False,
    filename: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download prior ``name`` into the cache and return the local path.

    ``name`` is a catalog entry (``url``/``sha256`` override its fields) or any name when
    ``url`` is given. The file is streamed into a temporary file in the cache directory,
    its SHA-256 is checked, and only then is it renamed into place; a wrong checksum raises
    :class:`GRNError` and leaves nothing behind. A cached file with the expected checksum is
    returned without downloading. Without a known checksum the download is refused unless
    ``allow_unverified=True`` (then the computed checksum is logged, to be recorded in the
    catalog).
    """
    try:
        entries = catalog()
    except GRNError:
        if url is None:
            raise
        entries = {}
    entry = entries.get(name)
    if entry is None and url is None:
        known = ", ".join(sorted(entries)) or "none"
        raise GRNError(f"download: {name!r} is not a catalog prior (known: {known}); "
                       "pass url= to download another file")
    url = url if url is not None else entry.url  # type: ignore[union-attr]
    expected = _check_sha256(sha256, f"download {name!r}") if sha256 is not None else (
        entry.sha256 if entry is not None else None)
    filename = filename or (entry.filename if entry is not None else _url_filename(url) or name)
    if not filename or filename in (".", "..") or "/" in filename or os.sep in filename:
        raise GRNError(f"download {name!r}: invalid file name {filename!r}; pass filename=")
    folder = default_cache_dir(cache_dir)
    final = folder / filename

    _check_scheme(url, f"download {name!r}")
    pinned = final.with_name(final.name + ".sha256")  # the checksum of an unverified download
    if final.is_file():
        if expected is None:
            if allow_unverified:
                recorded = pinned.read_text().strip() if pinned.is_file() else None
                if recorded is not None and _sha256_file(final) == recorded:
                    logger.warning("%s: using the cached %s (no catalog checksum; it matches the one "
                                   "recorded when it was downloaded)", name, final)
                    return final
                logger.warning("%s: cached %s has no checksum to check it against (or no longer matches "
                               "the one recorded); downloading again", name, final)
        elif _sha256_file(final) == expected:
            logger.info("%s: using cached %s", name, final)
            return final
        else:
            logger.warning("%s: cached %s does not match its checksum; downloading again",
                           name, final)
    if expected is None and not allow_unverified:
        raise GRNError(
            f"download {name!r}: no sha256 checksum is recorded for {url}, so the file cannot "
            "be verified; fill in the entry's sha256 in priors/catalog.yaml, or accept it unverified "
            "(in a recipe: grn.prior_verify=false; in Python: allow_unverified=True), or download the "
            "file yourself and give its path (grn.prior=FILE)"
        )

    digest_holder: dict[str, str] = {}

    def fetch(tmp: str) -> None:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, \
                    open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise GRNError(
                f"download {name!r}: cannot fetch {url} ({reason}); check the network or "
                "download the file yourself and pass its path"
            ) from None
        got = digest.hexdigest()
        if expected is not None and got != expected:
            raise GRNError(
                f"download {name!r}: checksum mismatch for {url}: expected sha256 {expected}, "
                f"got {got}; the file changed upstream or is corrupt, so it was not cached"
            )
        digest_holder["sha256"] = got

    logger.info("%s: downloading %s -> %s", name, url, final)
    atomic_write(final, fetch)
    if expected is None:
        atomic_write_text(pinned, digest_holder["sha256"] + "\n")  # later uses re-verify against it
        logger.warning("%s: downloaded %s without verification; its sha256 is %s (record it "
                       "in the catalog)", name, final, digest_holder.get("sha256"))
    return final


#: URL schemes a prior may be fetched with: https, or file:// for a local mirror
SCHEMES = ("https", "file")


def _check_scheme(url: str, where: str) -> None:
    scheme = urllib.parse.urlsplit(str(url)).scheme.lower()
    if scheme not in SCHEMES:
        raise GRNError(f"{where}: {str(url)[:80]!r} uses the scheme {scheme or '(none)'!r}; priors are fetched "
                       f"only over https (or file:// for a local mirror): use an https URL, or download the "
                       f"file yourself and give its path")


def resolve_prior(ref: PathLike, cache_dir: PathLike | None = None,
                  allow_unverified: bool = False) -> Path:
    """A local file for ``ref``: an existing path as it is, a catalog name downloaded into
    (or found in) the cache. Anything else raises :class:`GRNError` listing the catalog."""
    if not isinstance(ref, (str, os.PathLike)):
        raise GRNError(f"a prior is a catalog name or a file path, got {type(ref).__name__}")
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise GRNError(f"prior {str(ref)!r} is a directory; give the network file inside it")
    try:
        entries, problem = catalog(), ""
    except GRNError as exc:  # an unreadable catalog is reported, not mistaken for a missing one
        entries, problem = {}, f" (the catalog cannot be used: {exc})"
    if isinstance(ref, str) and ref in entries:
        local = download(ref, cache_dir=cache_dir, allow_unverified=allow_unverified)
        member = entries[ref].member
        return _extract_member(local, member) if member else local
    known = ", ".join(sorted(entries)) or f"none{problem}"
    raise GRNError(
        f"prior {str(ref)!r} is neither an existing file nor a catalog name; catalog names: "
        f"{known}; or give the path of a network file ({', '.join(_readers.FORMATS)})"
    )


def _extract_member(archive: Path, member: str) -> Path:
    """``member`` of a (verified) zip archive, extracted once next to it."""
    import zipfile

    dest = archive.with_name(f"{stem(archive)}.{Path(member).name}")
    if dest.is_file() and dest.stat().st_mtime >= archive.stat().st_mtime:
        return dest
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member not in names:
                raise GRNError(f"{archive}: no member {member!r} in the archive; it holds "
                               f"{_preview(names, 10)}")

            def write(tmp: str) -> None:
                with zf.open(member) as src, open(tmp, "wb") as out:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        out.write(chunk)

            atomic_write(dest, write)
    except zipfile.BadZipFile as exc:
        raise GRNError(f"{archive}: not a zip archive ({exc})") from None
    return dest
