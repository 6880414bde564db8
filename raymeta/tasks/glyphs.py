"""``glyphs``: an Omniglot-like few-shot image family rendered from matplotlib's fonts.

No download: the faces are the TrueType fonts matplotlib ships (DejaVu Sans / Serif
/ Sans Mono and STIX General, each in regular, bold, italic and bold italic: 16
faces). A **class** is one character; an **example** is that character rendered in a
face that has it, with a random affine distortion (rotation, shear, scale,
translation), stroke width (thinner / as drawn / thicker) and pixel noise, on a 28x28
grey canvas with ink = 1 and paper = 0 (as Omniglot is usually fed to Conv4).

Classes (:func:`glyph_classes`): letters, digits, punctuation and symbols that at
least ``MIN_FACES`` faces contain, without precomposed accents (so "é" is not a class
next to "e"), without Braille and box drawing (face-invariant patterns), and with
look-alikes across scripts removed (Latin "A", Greek "Α" and Cyrillic "А" render the
same: only the first by code point stays). Each class has a **script** (the first
word of its Unicode name: LATIN, GREEK, CYRILLIC, ...; symbols are "SYMBOL").

Everything is deterministic: the class list depends only on the shipped fonts,
example ``j`` of class ``c`` only on ``(seed, c, j)``
(``numpy.random.default_rng([seed, c, j])``). Splits by character put every class
in exactly one of train / val / test (a seeded permutation); the harder split by
script holds whole scripts out. Rendered arrays are cached as ``.npy`` files.

Example:
    >>> data = glyph_split("train", seed=0, examples_per_class=4)  # doctest: +SKIP
    >>> data.features.shape  # doctest: +SKIP
    torch.Size([..., 28, 28])
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raymeta.errors import EpisodeError
from raymeta.tasks.episodes import LabelledData

__all__ = [
    "CANVAS",
    "MIN_FACES",
    "OUTLIER_DOMAINS",
    "GlyphClass",
    "font_faces",
    "glyph_classes",
    "glyph_classification",
    "glyph_split",
    "outlier_images",
    "render_example",
    "split_classes",
]

CANVAS = 28
MIN_FACES = 8
_FAMILIES = ("DejaVuSans", "DejaVuSerif", "STIXGeneral")
_EXCLUDED_BLOCKS = ("BRAILLE", "BOX")
_SCRIPTS = {"LATIN", "GREEK", "CYRILLIC", "GEORGIAN", "ARMENIAN", "LAO", "HEBREW"}
_LOOKALIKE = 0.97  # cosine above which two characters count as the same shape
_RENDER_PX = 64  # glyphs are drawn this large, then fitted into the canvas


@dataclasses.dataclass(frozen=True)
class GlyphClass:
    """One class: a character, its script and the faces that have it."""

    char: str
    script: str
    faces: tuple[str, ...]


@functools.cache
def font_faces() -> tuple[Path, ...]:
    """The 16 shipped TrueType faces used for rendering (sorted by name)."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = sorted(
        p
        for p in root.glob("*.ttf")
        if p.stem.startswith(_FAMILIES) and "Display" not in p.stem
    )
    if len(faces) < MIN_FACES:
        raise EpisodeError(
            f"found {len(faces)} font faces under {root}, need >= {MIN_FACES}; is "
            "matplotlib installed with its bundled fonts?"
        )
    return tuple(faces)


def _script(char: str) -> str:
    word = unicodedata.name(char, "SYMBOL").split()[0]
    return word if word in _SCRIPTS else "SYMBOL"


def _eligible(code: int) -> bool:
    char = chr(code)
    name = unicodedata.name(char, "")
    return (
        unicodedata.category(char)[0] in "LNPS"
        and not char.isspace()
        and not unicodedata.decomposition(char)
        and not name.startswith(_EXCLUDED_BLOCKS)
        and "COMBINING" not in name
    )


@functools.cache
def _face(path: str):  # one FT2Font per face and process (not picklable)
    from matplotlib.ft2font import FT2Font

    return FT2Font(path)


def _draw(char: str, face: Path) -> np.ndarray:
    """The glyph's ink as a float array in [0, 1], cropped to its bounding box."""
    from matplotlib.ft2font import LoadFlags

    font = _face(str(face))
    font.set_size(_RENDER_PX, 72)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing glyph is filtered by the charmap
        font.set_text(char, 0.0, flags=LoadFlags.NO_HINTING)
        font.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if not len(rows):
        return np.zeros((1, 1), np.float32)
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit(ink: np.ndarray, box: int = 22) -> torch.Tensor:
    """Scale ``ink`` to fit a ``box`` square (aspect kept), centred on the canvas."""
    h, w = ink.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(
        torch.from_numpy(ink)[None, None], size=(nh, nw), mode="area"
    )[0, 0]
    canvas = torch.zeros(CANVAS, CANVAS)
    top, left = (CANVAS - nh) // 2, (CANVAS - nw) // 2
    canvas[top : top + nh, left : left + nw] = small
    return canvas


@functools.cache
def glyph_classes() -> tuple[GlyphClass, ...]:
    """Every class, sorted by code point (deterministic for the shipped fonts)."""
    faces = font_faces()
    charmaps = {f.stem: set(_face(str(f)).get_charmap()) for f in faces}
    counts: dict[int, list[str]] = {}
    for stem, codes in charmaps.items():
        for code in codes:
            if _eligible(code):
                counts.setdefault(code, []).append(stem)
    candidates = sorted(c for c, f in counts.items() if len(f) >= MIN_FACES)
    reference = next(f for f in faces if f.stem == "DejaVuSans")
    kept: list[GlyphClass] = []
    shapes: list[torch.Tensor] = []
    for code in candidates:
        char = chr(code)
        if reference.stem not in counts[code]:
            continue
        shape = _fit(_draw(char, reference)).reshape(-1)
        norm = float(shape.norm())
        if norm == 0 or _looks_like(shape / norm, shapes):
            continue
        shapes.append(shape / norm)
        kept.append(GlyphClass(char, _script(char), tuple(sorted(counts[code]))))
    return tuple(kept)


def _looks_like(shape: torch.Tensor, shapes: list[torch.Tensor]) -> bool:
    if not shapes:
        return False
    return bool((torch.stack(shapes) @ shape).max() > _LOOKALIKE)


def render_example(cls: GlyphClass, rng: np.random.Generator) -> np.ndarray:
    """One distorted 28x28 example of ``cls`` (float32, ink 1, paper 0)."""
    faces = {f.stem: f for f in font_faces()}
    face = faces[cls.faces[int(rng.integers(len(cls.faces)))]]
    img = _fit(_draw(cls.char, face), box=int(rng.integers(18, 25)))[None, None]
    angle = math.radians(rng.uniform(-15, 15))
    shear = rng.uniform(-0.25, 0.25)
    scale = rng.uniform(0.9, 1.1)
    tx, ty = rng.uniform(-0.1, 0.1, size=2)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor(
        [[[cos, -sin + shear, tx], [sin, cos, ty]]], dtype=torch.float32
    )
    grid = F.affine_grid(theta, [1, 1, CANVAS, CANVAS], align_corners=False)
    img = F.grid_sample(img, grid, align_corners=False, padding_mode="zeros")
    stroke = int(rng.integers(3))  # 0: thinner, 1: as drawn, 2: thicker
    if stroke == 2:
        img = F.max_pool2d(img, 3, stride=1, padding=1)
    elif stroke == 0:
        img = -F.max_pool2d(-img, 2, stride=1, padding=1)[..., :CANVAS, :CANVAS]
    img = img / img.max().clamp_min(1e-6)  # thin strokes keep full contrast
    noise = rng.normal(0.0, 0.05, size=(CANVAS, CANVAS)).astype(np.float32)
    return np.clip(img[0, 0].numpy() + noise, 0.0, 1.0)


def split_classes(
    classes: Sequence[GlyphClass], *, seed: int, by: str = "character"
) -> dict[str, list[int]]:
    """Class indices of the train / val / test splits (disjoint, covering all).

    ``by="character"``: a seeded permutation cut 64% / 16% / 20%. ``by="script"``:
    whole scripts held out (test: GREEK, GEORGIAN, ARMENIAN and LAO; val: CYRILLIC
    and HEBREW; train: LATIN and SYMBOL), so test characters come from scripts the
    embedding never saw.

    Raises:
        EpisodeError: An unknown ``by``.
    """
    if by == "character":
        order = np.random.default_rng([seed, 7]).permutation(len(classes))
        a, b = round(0.64 * len(order)), round(0.80 * len(order))
        return {
            "train": sorted(order[:a].tolist()),
            "val": sorted(order[a:b].tolist()),
            "test": sorted(order[b:].tolist()),
        }
    if by == "script":
        held = {
            "test": {"GREEK", "GEORGIAN", "ARMENIAN", "LAO"},
            "val": {"CYRILLIC", "HEBREW"},
        }

        def home(c: GlyphClass) -> str:
            return next(
                (s for s, scripts in held.items() if c.script in scripts), "train"
            )

        out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for i, c in enumerate(classes):
            out[home(c)].append(i)
        return out
    raise EpisodeError(f"split by must be 'character' or 'script', got {by!r}")


def _cache_dir() -> Path:
    root = os.environ.get("RAYMETA_CACHE") or Path.home() / ".cache" / "raymeta"
    return Path(root) / "glyphs"


def _render_split(
    indices: Sequence[int], *, seed: int, examples_per_class: int
) -> np.ndarray:
    classes = glyph_classes()
    out = np.empty((len(indices), examples_per_class, CANVAS, CANVAS), np.float32)
    for row, c in enumerate(indices):
        for j in range(examples_per_class):
            out[row, j] = render_example(
                classes[c], np.random.default_rng([seed, c, j])
            )
    return out


def glyph_split(
    split: str,
    *,
    seed: int = 0,
    examples_per_class: int = 20,
    by: str = "character",
    cache: bool = True,
) -> LabelledData:
    """One split as labelled ``N x 28 x 28`` images (labels = global class indices).

    Args:
        split: "train", "val" or "test".
        seed: Seeds the split and every example.
        examples_per_class: Examples rendered per class (Omniglot has 20).
        by: "character" or "script" (see :func:`split_classes`).
        cache: Keep rendered arrays under ``$RAYMETA_CACHE/glyphs`` (default
            ``~/.cache/raymeta/glyphs``) and reuse them.

    Raises:
        EpisodeError: An unknown split, or ``examples_per_class < 1``.
    """
    if examples_per_class < 1:
        raise EpisodeError(f"examples_per_class must be >= 1, got {examples_per_class}")
    parts = split_classes(glyph_classes(), seed=seed, by=by)
    if split not in parts:
        raise EpisodeError(f"split must be one of {sorted(parts)}, got {split!r}")
    return _labelled(parts[split], seed, examples_per_class, cache, relabel=False)


def glyph_classification(
    *,
    num_classes: int = 20,
    examples_per_class: int = 100,
    seed: int = 0,
    cache: bool = True,
) -> LabelledData:
    """A ``num_classes``-way glyph classification set, labels ``0..C-1``.

    The classes are a seeded draw from every glyph class; example ``j`` of each is
    rendered as in :func:`glyph_split` (class-major rows).

    Raises:
        EpisodeError: ``num_classes`` outside ``[2, #classes]`` or no examples.
    """
    total = len(glyph_classes())
    if not 2 <= num_classes <= total or examples_per_class < 1:
        raise EpisodeError(
            f"need 2 <= num_classes <= {total} and examples_per_class >= 1; got "
            f"{num_classes}, {examples_per_class}"
        )
    rng = np.random.default_rng([seed, 11])
    chosen = sorted(rng.choice(total, size=num_classes, replace=False).tolist())
    return _labelled(chosen, seed, examples_per_class, cache, relabel=True)


def _labelled(
    indices: Sequence[int], seed: int, per_class: int, cache: bool, *, relabel: bool
) -> LabelledData:
    """Rendered (or cached) examples of ``indices``, labelled by class index."""
    images = _cached(indices, seed, per_class) if cache else None
    if images is None:
        images = _render_split(indices, seed=seed, examples_per_class=per_class)
        if cache:
            _store(images, indices, seed, per_class)
    names = np.arange(len(indices)) if relabel else np.asarray(indices)
    labels = np.repeat(names.astype(np.int64), per_class)
    return LabelledData(
        torch.from_numpy(images.reshape(-1, CANVAS, CANVAS)), torch.from_numpy(labels)
    )


#: Image domains of :func:`outlier_images` (the glyph family also has "permuted").
OUTLIER_DOMAINS = ("digits", "noise")


def outlier_images(domain: str, *, seed: int = 0) -> LabelledData:
    """Labelled ``N x 28 x 28`` images from another domain, for outlier tasks.

    Args:
        domain: "digits" (scikit-learn's bundled 8x8 digits, bilinearly upscaled
            to 22x22 and centred, ink = 1, 10 classes) or "noise" (20 classes, each
            a fixed uniform template blended 50/50 with fresh uniform noise, 30
            examples each; drawn from ``seed``).
        seed: Seeds the noise domain.

    Raises:
        EpisodeError: An unknown domain.
    """
    if domain == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        small = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
        big = F.interpolate(small, size=(22, 22), mode="bilinear", align_corners=False)
        images = F.pad(big, (3, 3, 3, 3)).squeeze(1).clamp(0.0, 1.0)
        return LabelledData(images, torch.from_numpy(digits.target.astype(np.int64)))
    if domain == "noise":
        rng = np.random.default_rng([seed, 7919])
        templates = rng.random((20, 1, CANVAS, CANVAS))
        fresh = rng.random((20, 30, CANVAS, CANVAS))
        images = (0.5 * templates + 0.5 * fresh).reshape(-1, CANVAS, CANVAS)
        labels = np.repeat(np.arange(20, dtype=np.int64), 30)
        return LabelledData(
            torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels)
        )
    raise EpisodeError(
        f"unknown outlier domain {domain!r}; expected one of {list(OUTLIER_DOMAINS)}"
    )


def _cache_path(indices: Sequence[int], seed: int, per_class: int) -> Path:
    faces = [f.name for f in font_faces()]
    key = repr((faces, list(indices), seed, per_class, _VERSION)).encode()
    return _cache_dir() / f"{hashlib.sha256(key).hexdigest()[:20]}.npy"


_VERSION = 2  # bump when rendering changes, so old caches are not reused


def _cached(indices: Sequence[int], seed: int, per_class: int) -> np.ndarray | None:
    path = _cache_path(indices, seed, per_class)
    return np.load(path) if path.exists() else None


def _store(
    images: np.ndarray, indices: Sequence[int], seed: int, per_class: int
) -> None:
    path = _cache_path(indices, seed, per_class)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, images)
    os.replace(tmp, path)  # atomic: a killed writer leaves no partial cache file
