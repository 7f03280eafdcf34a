"""A deterministic synthetic face data set in the exact layout of the mask-status competition.

```
root/train/train.csv          id,gender,race,age,path
root/train/images/<path>/     mask1..mask5, incorrect_mask, normal  (.jpg / .jpeg / .png)
root/eval/info.csv            ImageID,ans  (ans is a placeholder 0)
root/eval/images/<ImageID>
root/eval_truth.csv           ImageID,mask,gender,age,person  (the hidden truth of eval, for scoring)
root/label_noise.csv          with label noise: the planted wrong labels (see automl/data/label_noise.py)
```
Every person has a fixed look (background, skin, face shape, hair, accessories), so a split by image
instead of by person leaks; mask, gender and age show as imperfect cues (mask shape and colours vary,
~15% of people have the other gender's style, grey hair and wrinkles grow noisily with age).
"""

from __future__ import annotations

import contextlib
import csv
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from automl.data.label_noise import MASK_SWAP, NOISE_FIELDS, NOISE_FILE, check_noise, plant_label_noise
from automl.data.layouts.competition import PHOTO_MASK  # the layout's photo names, drawn in this order
from automl.errors import AutomlError

DEMO_DEFAULT_PEOPLE = 200
WIDTH, HEIGHT = 384, 512
JPEG_QUALITY = 90
#: Sets of at least this many people are drawn by a pool of processes (a photo takes ~16 ms of one core).
PARALLEL_PEOPLE = 100
TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
EVAL_COLUMNS = ("ImageID", "ans")
EVAL_TRUTH_COLUMNS = ("ImageID", "mask", "gender", "age", "person")

_FEMALE_SHARE = 0.61
_OTHER_STYLE = 0.15  # share of people drawn with the other gender's hair and face shape
_RACES = ("Asian", "White", "Black", "Hispanic")
_RACE_P = (0.96, 0.02, 0.01, 0.01)
_BLOCK = 20  # extensions and junk files are dealt per block of people, so small sets get all of them
_DUPLICATE_BLOCK = 100
# Random-number streams: (seed, stream, person, photo) always has four words, so no two collide.
_TRAIN_TABLE, _EVAL_TABLE, _TRAIN_LOOK, _EVAL_LOOK, _TRAIN_PHOTO, _EVAL_PHOTO, _LAYOUT, _EVAL_NAMES, _NOISE = range(9)
# A macOS AppleDouble header, padded: what `._*` files beside real photos look like.
_JUNK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02".ljust(4096, b"\x00")

_SKINS = np.array(
    [(232, 192, 162), (222, 176, 142), (206, 156, 120), (186, 136, 100), (150, 102, 72), (102, 70, 50)],
    dtype=np.float32,
)
_SKIN_P = (0.3, 0.32, 0.2, 0.1, 0.05, 0.03)
_HAIRS = np.array([(22, 20, 20), (55, 38, 28), (95, 65, 42), (150, 108, 68)], dtype=np.float32)
_HAIR_P = (0.5, 0.3, 0.15, 0.05)
_MASKS = np.array(
    [
        (240, 240, 242),  # white
        (165, 205, 235),  # surgical blue
        (32, 32, 36),  # black
        (200, 200, 206),  # light grey
        (44, 56, 98),  # navy
        (236, 176, 196),  # pink
        (192, 182, 142),  # khaki
        (104, 150, 118),  # green
    ],
    dtype=np.float32,
)
_MASK_P = (0.46, 0.2, 0.13, 0.06, 0.04, 0.05, 0.03, 0.03)  # mostly white, surgical blue and black, as in reality


def _rng(seed: int, stream: int, person: int = 0, photo: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, person, photo])


@cache
def _age_p() -> np.ndarray:
    """P(age) for ages 18..60: ~45% under 30, a pile-up at 57-59 and ~7% exactly 60, like the real data."""
    p = np.zeros(43)
    young = np.linspace(1.4, 0.6, 12)  # 18..29
    p[:12] = 0.45 * young / young.sum()
    middle = np.linspace(0.3, 1.5, 27)  # 30..56, rising towards the fifties
    p[12:39] = 0.35 * middle / middle.sum()
    p[39:42] = 0.13 / 3  # 57..59
    p[42] = 0.07  # 60
    return p / p.sum()


def _sample_person(rng: np.random.Generator) -> tuple[str, str, int]:
    gender = "female" if rng.random() < _FEMALE_SHARE else "male"
    race = _RACES[rng.choice(len(_RACES), p=_RACE_P)]
    age = 18 + int(rng.choice(43, p=_age_p()))
    return gender, race, age


def _deal(seed: int, stream: int, people: int) -> tuple[list[str], np.ndarray]:
    """Extensions (~80% jpg, ~10% jpeg, ~10% png) and junk flags (~5%) dealt per block of 20 people."""
    extensions, junk = [], np.zeros(people, dtype=bool)
    for block, start in enumerate(range(0, people, _BLOCK)):
        size = min(_BLOCK, people - start)
        rng = _rng(seed, _LAYOUT, stream, block)
        rare = max(1, round(size * 0.1)) if size >= 3 else 0
        deck = ["jpeg"] * rare + ["png"] * rare + ["jpg"] * (size - 2 * rare)
        extensions += [deck[k] for k in rng.permutation(size)]
        if size >= 5:
            junk[start + rng.integers(size)] = True
    return extensions, junk


def sample_people(people: int, seed: int = 0) -> pd.DataFrame:
    """The train people, without drawing: id, gender, race, age, path, ext (of their photos), junk (`._*`)."""
    rows, increments = [], np.ones(people, dtype=np.int64)
    for i in range(people):
        rng = _rng(seed, _TRAIN_TABLE, i)
        rows.append(_sample_person(rng))
        increments[i] = rng.geometric(0.5)  # 1, 2, 3...: gaps in the numbering, like the real ids
    duplicates = set()
    for block, start in enumerate(range(0, people, _DUPLICATE_BLOCK)):
        size = min(_DUPLICATE_BLOCK, people - start)
        if size >= 50:  # ~1%: a second person numbered like the one before, with a `-1` suffix
            duplicates.add(start + 1 + int(_rng(seed, _LAYOUT, 99, block).integers(size - 1)))
    increments[sorted(duplicates)] = 0
    numbers = np.cumsum(increments)
    ids = [f"{n:06d}-1" if i in duplicates else f"{n:06d}" for i, n in enumerate(numbers)]
    extensions, junk = _deal(seed, 0, people)
    table = pd.DataFrame(rows, columns=["gender", "race", "age"])
    table.insert(0, "id", ids)
    table["path"] = [f"{i}_{g}_{r}_{a}" for i, g, r, a in zip(ids, table.gender, table.race, table.age, strict=True)]
    table["ext"] = extensions
    table["junk"] = junk
    return table


def _sample_eval_people(people: int, seed: int, first_number: int) -> pd.DataFrame:
    rows = [_sample_person(_rng(seed, _EVAL_TABLE, i)) for i in range(people)]
    table = pd.DataFrame(rows, columns=["gender", "race", "age"])
    table["person"] = [
        f"{first_number + i:06d}_{g}_{r}_{a}"
        for i, (g, r, a) in enumerate(zip(table.gender, table.race, table.age, strict=True))
    ]
    table["ext"] = _deal(seed, 1, people)[0]
    return table


# ----------------------------------------------------------------------------------------------- drawing


@dataclass
class _Look:
    """What every photo of one person shares beyond the pre-drawn base picture."""

    cx: float
    cy: float
    a: float  # face half width
    b: float  # face half height
    skin: np.ndarray
    lips: np.ndarray
    mouth: float
    eye_dx: float
    eye_y: float
    glasses: tuple[int, np.ndarray, int] | None  # shape, colour, thickness
    earrings: tuple[np.ndarray, int] | None  # colour, radius


@cache
def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    return yy, xx


def _c(colour: np.ndarray | tuple) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour, dtype=np.float64), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _xy(point: tuple | np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))


def _pts(points: np.ndarray) -> list[np.ndarray]:
    return [np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)]


def _oval(img: np.ndarray, centre: tuple, axes: tuple, colour, thickness: int = -1, arc=(0, 360)) -> None:
    cv2.ellipse(img, _xy(centre), _xy(axes), 0, arc[0], arc[1], _c(colour), thickness, cv2.LINE_AA)


def _dot(img: np.ndarray, centre: tuple, radius: float, colour, thickness: int = -1) -> None:
    cv2.circle(img, _xy(centre), int(radius), _c(colour), thickness, cv2.LINE_AA)


def _line(img: np.ndarray, start: tuple, end: tuple, colour, thickness: int) -> None:
    cv2.line(img, _xy(start), _xy(end), _c(colour), thickness, cv2.LINE_AA)


def _fill(img: np.ndarray, points: np.ndarray, colour) -> None:
    cv2.fillPoly(img, _pts(points), _c(colour), cv2.LINE_AA)


def _path(img: np.ndarray, points: np.ndarray, colour, thickness: int, closed: bool = False) -> None:
    cv2.polylines(img, _pts(points), closed, _c(colour), thickness, cv2.LINE_AA)


def _ellipse(cx: float, cy: float, ax: float, ay: float, t0: float, t1: float, n: int = 32) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(20, 236, 3).astype(np.float32)


def _pattern(rng: np.random.Generator, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A full-size textured fill: a gradient, stripes, checks, dots, blobs, a split wall or plain."""
    yy, xx = _grid()
    kind = int(rng.integers(8))
    period = float(rng.uniform(18, 90))
    if kind == 0:
        t = yy / HEIGHT
    elif kind == 1:
        angle = rng.uniform(0, math.pi)
        t = (np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period) > 0).astype(np.float32)
    elif kind == 2:
        t = ((xx // period + yy // period) % 2).astype(np.float32)
    elif kind == 3:
        r = period * rng.uniform(0.15, 0.4)
        t = (((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2 < r * r).astype(np.float32)
    elif kind == 4:
        x0, y0 = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        t = np.clip(np.hypot(xx - x0, yy - y0) / 400, 0, 1)
    elif kind == 5:
        t = (xx > rng.uniform(40, WIDTH - 40)).astype(np.float32)
    elif kind == 6:
        p1, p2, f1, f2 = rng.uniform(20, 70), rng.uniform(20, 70), rng.uniform(0, 6), rng.uniform(0, 6)
        t = 0.5 + 0.25 * (np.sin(xx / p1 + f1) + np.cos(yy / p2 + f2))
    else:
        t = np.zeros_like(xx)
    return (first + (second - first) * t[..., None]).astype(np.uint8)


def _person_base(rng: np.random.Generator, female: bool, age: int) -> tuple[np.ndarray, _Look]:
    """Draw everything that stays the same across one person's photos; return it and what photos add."""
    female_style = female != (rng.random() < _OTHER_STYLE)
    img = _pattern(rng, _random_colour(rng), _random_colour(rng))
    cx = WIDTH / 2 + rng.normal(0, 8)
    cy = HEIGHT * 0.46 + rng.normal(0, 8)
    a = rng.uniform(78, 89) if female_style else rng.uniform(92, 104)
    b = a * rng.uniform(1.22, 1.36)
    skin = _SKINS[rng.choice(len(_SKINS), p=_SKIN_P)] + rng.normal(0, 8, 3).astype(np.float32)
    shade = skin * 0.82
    # Grey hair and wrinkles grow with age, with enough spread that 57-59 and 60 look alike.
    grey = float(np.clip(1 / (1 + math.exp(-(age - 47) / 5)) + rng.normal(0, 0.15), 0, 0.95))
    wrinkle = float(np.clip((age - 25) / 33 + rng.normal(0, 0.12), 0, 1))
    hair = _HAIRS[rng.choice(len(_HAIRS), p=_HAIR_P)] + rng.normal(0, 6, 3).astype(np.float32)
    if rng.random() < 0.05:
        hair = _random_colour(rng) * 0.7  # dyed
    hair = hair * (1 - grey) + np.float32(rng.uniform(170, 215)) * grey

    # Shoulders in a patterned shirt with a logo: strong identity cues.
    shirt = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    cv2.ellipse(shirt, _xy((cx, HEIGHT + 40)), _xy((rng.uniform(150, 190), rng.uniform(120, 150))), 0, 0, 360, 255, -1)
    fill = _pattern(rng, _random_colour(rng), _random_colour(rng))
    img[shirt > 0] = fill[shirt > 0]
    neck = [
        (cx - a * 0.42, cy + b * 0.6),
        (cx + a * 0.42, cy + b * 0.6),
        (cx + a * 0.5, HEIGHT - 70),
        (cx, HEIGHT - 40),
        (cx - a * 0.5, HEIGHT - 70),
    ]
    _fill(img, np.array(neck), shade)
    logo = (cx + rng.uniform(-120, 120), HEIGHT - rng.uniform(18, 40))
    logo_colour, size = _random_colour(rng), rng.uniform(8, 16)
    match int(rng.integers(3)):
        case 0:
            _dot(img, logo, size, logo_colour)
        case 1:
            cv2.rectangle(img, _xy(np.subtract(logo, size)), _xy(np.add(logo, size)), _c(logo_colour), -1)
        case _:
            x, y = logo
            _fill(img, np.array([(x, y - size), (x + size, y + size), (x - size, y + size)]), logo_colour)

    long_hair = female_style == (rng.random() < 0.95)
    if long_hair:
        length, spread = rng.uniform(1.0, 1.9), rng.uniform(1.25, 1.55)
        back = _ellipse(cx, cy - b * 0.05, a * 1.16, b * 1.12, math.pi * 0.9, math.pi * 2.1)
        back = np.concatenate([back, [(cx + a * spread, cy + b * length), (cx - a * spread, cy + b * length)]])
        _fill(img, back, hair * 0.85)
    else:
        for side in (-1, 1):  # ears; long hair hides them
            _oval(img, (cx + side * a * 0.98, cy + b * 0.02), (a * 0.14, b * 0.17), shade)
        _oval(img, (cx, cy - b * 0.08), (a * 1.07, b * 1.06), hair, arc=(180, 360))

    # The face: narrower in the female style, with a wider square jaw in the male style.
    _oval(img, (cx, cy), (a, b), skin)
    if not female_style:
        _oval(img, (cx, cy + b * 0.2), (a * 0.98, b * 0.78), skin, arc=(0, 180))

    # Hair over the forehead: a cap cut by a straight, curved or parted hairline; receding with age.
    hairline = cy - b * rng.uniform(0.5, 0.66)
    if not female_style and age > 45 and rng.random() < 0.4:
        hairline = cy - b * rng.uniform(0.75, 0.9)
    curve, slant = rng.uniform(-0.1, 0.25) * b, rng.uniform(-0.15, 0.15) * b
    cap = _ellipse(cx, cy - b * 0.04, a * 1.07, b * 1.08, math.pi, 2 * math.pi, 40)
    offset = (cap[:, 0] - cx) / a
    cap[:, 1] = np.minimum(cap[:, 1], hairline + curve * offset**2 + slant * offset)
    _fill(img, cap, hair)
    if not long_hair and rng.random() < 0.3:  # spiky
        for x in np.linspace(cx - a * 0.7, cx + a * 0.7, 7):
            top = cy - b * 1.02 - (1 - ((x - cx) / a) ** 2) * b * 0.1
            _fill(
                img, np.array([(x - a * 0.12, top + b * 0.1), (x + a * 0.12, top + b * 0.1), (x, top - b * 0.12)]), hair
            )

    eye_y, eye_dx = cy - b * rng.uniform(0.1, 0.16), a * rng.uniform(0.36, 0.44)
    iris = rng.integers(20, 110, 3)
    brow_colour = hair * (0.6 if grey < 0.5 else 0.8)
    brow = int(rng.integers(5, 9)) if not female_style else int(rng.integers(2, 5))
    brow_y, brow_tilt = eye_y - b * rng.uniform(0.12, 0.16), rng.uniform(-5, 3)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        _oval(img, (ex, eye_y), (a * 0.16, b * 0.055), (245, 245, 245))
        _dot(img, (ex, eye_y), b * 0.05, iris)
        _dot(img, (ex, eye_y), b * 0.022, (10, 10, 10))
        _oval(img, (ex, eye_y), (a * 0.17, b * 0.065), shade * 0.6, 2, arc=(180, 360))
        _line(img, (ex - side * a * 0.16, brow_y + brow_tilt), (ex + side * a * 0.2, brow_y), brow_colour, brow)

    # The nose: a bridge, a shadow, a tip and dark nostrils, so a mask pulled below the nose shows it.
    nose_y = cy + b * rng.uniform(0.2, 0.26)
    _line(img, (cx, eye_y), (cx + rng.normal(0, 3), nose_y - b * 0.04), shade, 3)
    _oval(img, (cx, nose_y + b * 0.05), (a * 0.2, b * 0.05), shade * 0.7, arc=(0, 180))
    _oval(img, (cx, nose_y), (a * 0.17, b * 0.06), shade * 0.95)
    for side in (-1, 1):
        _oval(img, (cx + side * a * 0.08, nose_y + b * 0.02), (a * 0.065, b * 0.03), shade * 0.35)

    # Age: wrinkles on the forehead, at the eyes and beside the mouth; age spots.
    line_colour = skin * (0.78 - 0.2 * wrinkle)
    for k in range(int(round(wrinkle * 4 + rng.uniform(-0.5, 0.5)))):
        y = eye_y - b * (0.3 + 0.09 * k)
        _oval(img, (cx, y + b * 0.3), (a * 0.45, b * 0.3), line_colour, 1 + int(wrinkle > 0.6), arc=(235, 305))
    if wrinkle > 0.3:
        for side in (-1, 1):
            x0 = cx + side * (eye_dx + a * 0.18)
            for dy in (-0.08, 0.0, 0.08)[: 1 + int(wrinkle * 3)]:
                _line(img, (x0, eye_y), (x0 + side * a * 0.12, eye_y + b * dy), line_colour, 1)
            _oval(img, (cx + side * eye_dx, eye_y + b * 0.06), (a * 0.12, b * 0.04), line_colour, 1, arc=(20, 160))
    if wrinkle > 0.45:
        for side in (-1, 1):
            fold = [
                (cx + side * a * 0.2, nose_y),
                (cx + side * a * 0.33, nose_y + b * 0.2),
                (cx + side * a * 0.31, nose_y + b * 0.36),
            ]
            _path(img, np.array(fold), line_colour, 2)
    if age > 50:
        for _ in range(int(rng.integers(0, 4))):
            _dot(
                img, (cx + rng.uniform(-0.7, 0.7) * a, cy + rng.uniform(-0.6, 0.1) * b), rng.integers(2, 5), skin * 0.72
            )
    if rng.random() < 0.3:  # a mole
        _dot(img, (cx + rng.uniform(-0.6, 0.6) * a, cy + rng.uniform(-0.4, 0.5) * b), rng.integers(2, 5), (60, 40, 35))
    if not female_style and rng.random() < 0.2:  # a beard, hidden by a mask
        overlay = img.copy()
        beard = _ellipse(cx, cy + b * 0.05, a * 0.98, b * 0.98, 0.05, math.pi - 0.05)
        beard[:, 1] = np.maximum(beard[:, 1], nose_y + b * 0.12)
        _fill(overlay, beard, hair * 0.9)
        alpha = float(rng.uniform(0.35, 0.8))
        img = cv2.addWeighted(overlay, alpha, img, 1 - alpha, 0)
    if rng.random() < 0.12:  # a headband or a hat, hiding some of the hair
        colour = _random_colour(rng)
        if rng.random() < 0.5:
            _oval(img, (cx, cy - b * 0.04), (a * 1.07, b * 1.08), colour, int(b * 0.08), arc=(215, 325))
        else:
            _oval(img, (cx, cy - b * 0.45), (a * 1.12, b * 0.7), colour, arc=(180, 360))
            cv2.rectangle(img, _xy((cx - a * 1.3, cy - b * 0.5)), _xy((cx + a * 1.3, cy - b * 0.42)), _c(colour), -1)

    glasses = None
    if rng.random() < 0.3:
        glasses = (int(rng.integers(2)), _random_colour(rng) * 0.6, int(rng.integers(2, 6)))
    earrings = None
    if rng.random() < (0.4 if female_style else 0.05):
        earrings = (_random_colour(rng), int(rng.integers(4, 10)))
    lips = skin * np.array([0.75, 0.45, 0.45], dtype=np.float32)
    if female_style and rng.random() < 0.5:  # lipstick
        lips = np.array([rng.uniform(150, 220), rng.uniform(20, 70), rng.uniform(40, 90)], dtype=np.float32)
    look = _Look(cx, cy, a, b, skin, lips, a * rng.uniform(0.32, 0.45), eye_dx, eye_y, glasses, earrings)
    return img, look


def _draw_mouth(img: np.ndarray, look: _Look, rng: np.random.Generator) -> None:
    cx, b = look.cx, look.b
    y = look.cy + b * rng.uniform(0.5, 0.55)
    width = look.mouth * rng.uniform(0.9, 1.15)
    if rng.random() < 0.25:  # open, teeth showing
        _oval(img, (cx, y), (width * 0.85, b * 0.06), (70, 22, 28))
        _line(img, (cx - width * 0.55, y - b * 0.035), (cx + width * 0.55, y - b * 0.035), (240, 240, 235), 3)
        _oval(img, (cx, y), (width * 0.9, b * 0.07), look.lips, 4)
    else:
        _oval(img, (cx, y), (width, b * rng.uniform(0.035, 0.055)), look.lips)
        smile = rng.uniform(-0.01, 0.03) * b
        _path(img, np.array([(cx - width, y - smile), (cx, y), (cx + width, y - smile)]), look.lips * 0.5, 2)


def _draw_mask(img: np.ndarray, look: _Look, status: str, rng: np.random.Generator) -> None:
    """A face mask: over nose and mouth (`wear`); below the nose, on the chin or askew (`incorrect`)."""
    cx, cy, a, b = look.cx, look.cy, look.a, look.b
    r = rng.random()
    if r < 0.1:  # face-coloured, so that brightness alone cannot tell
        colour = look.skin + rng.normal(0, 10, 3)
    elif r < 0.15:
        colour = _random_colour(rng)
    else:
        colour = _MASKS[rng.choice(len(_MASKS), p=_MASK_P)] + rng.normal(0, 8, 3)
    tilt, bottom = rng.normal(0, 2), cy + b * rng.uniform(1.02, 1.1)
    if status == "wear":
        top = cy + b * rng.uniform(-0.08, 0.03)
    else:
        variant = rng.choice(3, p=(0.6, 0.25, 0.15))
        if variant == 0:  # below the nose
            top = cy + b * rng.uniform(0.3, 0.38)
        elif variant == 1:  # on the chin
            top, bottom = cy + b * rng.uniform(0.56, 0.66), cy + b * rng.uniform(1.12, 1.22)
        else:  # askew, one nostril out
            top, tilt = cy + b * rng.uniform(0.12, 0.22), rng.choice((-1, 1)) * rng.uniform(14, 24)
    half = a * rng.uniform(1.0, 1.1)
    xs = np.linspace(-1, 1, 17)
    x = cx + half * xs
    upper = top + b * 0.2 * xs**2
    lower = np.maximum(cy + (bottom - cy) * np.sqrt(np.clip(1 - (xs * 0.96) ** 2, 0, 1)), upper + b * 0.08)
    centre, angle = np.array([cx, (top + bottom) / 2]), math.radians(tilt)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def place(points: np.ndarray) -> np.ndarray:
        return (np.asarray(points) - centre) @ rotation.T + centre

    for side in (0, -1):  # ear loops
        for y in (upper[side], lower[side] - b * 0.05):
            _path(img, place([(x[side], y), (cx + (1 if side else -1) * a, cy + b * 0.02)]), colour * 0.9, 2)
    outline = place(np.concatenate([np.stack([x, upper], 1), np.stack([x, lower], 1)[::-1]]))
    _fill(img, outline, colour)
    style = rng.random()
    if style < 0.6:  # pleats, or stripes of a second colour
        pleats = style < 0.35
        fractions = (0.3, 0.5, 0.7) if pleats else np.linspace(0.15, 0.85, int(rng.integers(3, 7)))
        second = colour * 0.78 if pleats else _random_colour(rng)
        for f in fractions:
            _path(img, place(np.stack([x[2:-2], (upper + (lower - upper) * f)[2:-2]], 1)), second, 2 if pleats else 5)
    _path(img, outline, colour * 0.7, 2, closed=True)


def _draw_photo(base: np.ndarray, look: _Look, status: str, rng: np.random.Generator) -> np.ndarray:
    img = base.copy()
    _draw_mouth(img, look, rng)
    if status != "not_wear":
        _draw_mask(img, look, status, rng)
    if look.glasses is not None:
        shape, colour, thickness = look.glasses
        r = look.a * 0.22
        for side in (-1, 1):
            ex = look.cx + side * look.eye_dx
            if shape == 0:
                _dot(img, (ex, look.eye_y), r, colour, thickness)
            else:
                corners = _xy((ex - r, look.eye_y - r * 0.7)), _xy((ex + r, look.eye_y + r * 0.7))
                cv2.rectangle(img, *corners, _c(colour), thickness, cv2.LINE_AA)
        _line(img, (look.cx - look.eye_dx + r, look.eye_y), (look.cx + look.eye_dx - r, look.eye_y), colour, thickness)
    if look.earrings is not None:
        colour, radius = look.earrings
        for side in (-1, 1):
            _dot(img, (look.cx + side * look.a, look.cy + look.b * 0.2), radius, colour)

    # The camera: pose, distance, light, focus and sensor noise change from photo to photo.
    matrix = cv2.getRotationMatrix2D((look.cx, look.cy), rng.normal(0, 3), rng.uniform(0.94, 1.06))
    matrix[:, 2] += rng.normal(0, 5, 2)
    img = cv2.warpAffine(img, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 2.2))
    _, xx = _grid()
    gain = rng.uniform(0.75, 1.2) * (1 + rng.normal(0, 0.04, 3)).astype(np.float32)
    side_light = 1 + rng.uniform(-0.3, 0.3) * (xx[0] / WIDTH - 0.5)
    out = img.astype(np.float32)
    out *= gain[None, None, :] * side_light[None, :, None]
    out += rng.uniform(-12, 12)
    noise = rng.standard_normal((HEIGHT // 2, WIDTH // 2, 3), dtype=np.float32)
    noise *= rng.uniform(2, 9)
    out += cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _save(img: np.ndarray, path: Path, ext: str) -> None:
    image = Image.fromarray(img, "RGB")
    if ext == "png":
        image.save(path, format="PNG", compress_level=1)
    else:
        image.save(path, format="JPEG", quality=JPEG_QUALITY)


# ----------------------------------------------------------------------------------------------- writing


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


@dataclass(frozen=True)
class _Noise:
    share: float = 0.0
    fields: tuple[str, ...] = NOISE_FIELDS


@dataclass(frozen=True)
class _PersonPhotos:
    """One person's photos to draw: everything is decided by the seed, the streams and the person's index, so any
    process draws the same bytes."""

    seed: int
    look_stream: int
    photo_stream: int
    index: int
    female: bool
    age: int
    ext: str
    photos: tuple[tuple[Path, str], ...]  # (file, mask status)


def _draw_person(person: _PersonPhotos) -> int:
    base, look = _person_base(_rng(person.seed, person.look_stream, person.index), person.female, person.age)
    for k, (path, status) in enumerate(person.photos):
        photo = _draw_photo(base, look, status, _rng(person.seed, person.photo_stream, person.index, k))
        _save(photo, path, person.ext)
    return len(person.photos)


def _draw_all(people: list[_PersonPhotos], progress: Callable[[int, int], None] | None) -> None:
    """Draw every person's photos: in this process for a small set, else on every usable core."""
    total, done = sum(len(p.photos) for p in people), 0
    if progress is not None:
        progress(0, total)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        if len(people) < PARALLEL_PEOPLE or cores < 2:
            drawn: Iterable[int] = map(_draw_person, people)
        else:
            # Spawned, not forked: the caller may hold threads (a progress bar) or a GPU.
            pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)  # on an error (Ctrl-C), nothing more drawn
            drawn = (future.result() for future in as_completed([pool.submit(_draw_person, p) for p in people]))
        for count in drawn:
            done += count
            if progress is not None:
                progress(done, total)


def _write_all(
    target: Path,
    people: int,
    seed: int,
    eval_people: int,
    progress: Callable[[int, int], None] | None,
    noise: _Noise = _Noise(),
) -> None:
    train = sample_people(people, seed)
    # The photos show the truth (`train`); train.csv and the folder names carry the given labels.
    planted = plant_label_noise(train, noise.share, noise.fields, _rng(seed, _NOISE))
    first_eval = int(train["id"].str[:6].astype(int).max()) + 1
    evals = _sample_eval_people(eval_people, seed, first_eval)
    images = target / "train" / "images"
    images.mkdir(parents=True)
    given = planted.given
    _write_csv(target / "train" / "train.csv", TRAIN_COLUMNS, list(given[list(TRAIN_COLUMNS)].itertuples(False)))
    if noise.share > 0:
        planted.records.to_csv(target / NOISE_FILE, index=False, lineterminator="\n")
    drawing = []
    for i, (person, folder_name) in enumerate(zip(train.itertuples(), given["path"], strict=True)):
        folder = images / folder_name
        folder.mkdir()
        swapped = i in planted.mask_swapped
        photos = tuple(
            (folder / f"{MASK_SWAP.get(stem, stem) if swapped else stem}.{person.ext}", status)
            for stem, status in PHOTO_MASK.items()
        )
        female = person.gender == "female"
        drawing.append(_PersonPhotos(seed, _TRAIN_LOOK, _TRAIN_PHOTO, i, female, person.age, person.ext, photos))
        if person.junk:
            stems = list(PHOTO_MASK)
            for k in _rng(seed, _LAYOUT, 98, i).choice(len(stems), 2, replace=False)[: 1 + i % 2]:
                (folder / f"._{stems[k]}.{person.ext}").write_bytes(_JUNK)

    truth = []
    if eval_people:
        eval_images = target / "eval" / "images"
        eval_images.mkdir(parents=True)
        names_rng = _rng(seed, _EVAL_NAMES)
        for j, person in enumerate(evals.itertuples()):
            names = [f"{names_rng.bytes(20).hex()}.{person.ext}" for _ in PHOTO_MASK]
            statuses = list(PHOTO_MASK.values())
            photos = tuple((eval_images / name, status) for name, status in zip(names, statuses, strict=True))
            female = person.gender == "female"
            drawing.append(_PersonPhotos(seed, _EVAL_LOOK, _EVAL_PHOTO, j, female, person.age, person.ext, photos))
            truth += [(name, status, person.gender, person.age, person.person) for name, status in zip(names, statuses,
                      strict=True)]  # fmt: skip
    _draw_all(drawing, progress)

    if not eval_people:
        return  # no eval folder at all: readers take an empty info.csv for a mistake
    truth = [truth[k] for k in names_rng.permutation(len(truth))]
    for k in names_rng.choice(len(truth), min(len(truth), max(2, len(truth) // 500)), replace=False):
        (eval_images / f"._{truth[k][0]}").write_bytes(_JUNK)
    _write_csv(target / "eval" / "info.csv", EVAL_COLUMNS, [(row[0], 0) for row in truth])
    _write_csv(target / "eval_truth.csv", EVAL_TRUTH_COLUMNS, truth)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _build(
    root: Path,
    people: int,
    seed: int,
    eval_people: int,
    progress: Callable[[int, int], None] | None,
    noise: _Noise = _Noise(),
) -> Path:
    """Write the set into a fresh hidden sibling of `root`; on any failure remove it and re-raise."""
    root.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp's random suffix keeps two threads of one process apart too.
    temporary = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-{os.getpid()}-", dir=root.parent))
    temporary.chmod(0o755)  # mkdtemp's 0o700 would make the published folder private
    try:
        _write_all(temporary, people, seed, eval_people, progress, noise)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return temporary


def _publish(temporary: Path, root: Path) -> bool:
    """Rename `temporary` to `root` (absent or an empty folder); False, and `temporary` gone, if `root` is taken."""
    try:
        os.replace(temporary, root)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        return False
    return True


def write_demo_data(
    root: Path,
    people: int = DEMO_DEFAULT_PEOPLE,
    seed: int = 0,
    eval_people: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    label_noise: float = 0.0,
    noise_fields: Sequence[str] = NOISE_FIELDS,
) -> Path:
    """Write the demo set into `root` (absent or empty): `people` in train, `eval_people` (people // 2) in eval.

    With `eval_people=0` there is no `eval/` folder and no `eval_truth.csv`. With `label_noise=P`, a share P of
    the train people get one wrong label each (the fields in `noise_fields` take turns), listed in label_noise.csv.
    The same arguments write byte-identical files, drawn on every core for large sets. `progress(done, total)`
    is called as each person's photos are written.
    """
    root = Path(root)
    eval_people = max(1, people // 2) if eval_people is None else eval_people
    if people < 1 or eval_people < 0 or seed < 0:
        raise AutomlError(f"need people >= 1, eval people >= 0 and seed >= 0; got {people}, {eval_people}, {seed}")
    check_noise(label_noise, noise_fields)
    if root.exists() and not _is_empty_dir(root):
        raise AutomlError(f"{root} already exists and is not an empty folder; choose a new place for the demo data")
    noise = _Noise(label_noise, tuple(noise_fields))
    if not _publish(_build(root, people, seed, eval_people, progress, noise), root):
        raise AutomlError(f"{root} was filled by something else while the demo data was written; nothing changed")
    return root


def _is_demo(root: Path) -> bool:
    return all((root / name).is_file() for name in ("train/train.csv", "eval/info.csv", "eval_truth.csv"))


def ensure_demo_data(home: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """`home / "demo-data"`, written once with the defaults; safe when several processes ask at once."""
    root = Path(home) / "demo-data"
    if _is_demo(root):
        return root
    if root.exists() and not _is_empty_dir(root):
        raise AutomlError(f"{root} exists but is not the demo data set; remove it, or pass --data")
    people = DEMO_DEFAULT_PEOPLE  # read at call time, so tests can make it small
    temporary = _build(root, people, 0, max(1, people // 2), progress)
    # Whoever renames first wins; a loser's copy is identical, so it is dropped and the winner's used.
    if not _publish(temporary, root) and not _is_demo(root):
        raise AutomlError(f"{root} was filled by something else while the demo data was written")
    return root
