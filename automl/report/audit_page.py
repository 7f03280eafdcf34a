"""The audit as a page to look at: each flagged label with small thumbnails of the person's photos embedded."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from PIL import Image

THUMBNAIL_PX = 96

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em 2em; color: #222; }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }
img { margin: 1px; border: 2px solid transparent; vertical-align: middle; } img.hit { border-color: #d62728; }
td.photos { white-space: nowrap; }
.given { color: #d62728; } .suggested { color: #2ca02c; font-weight: bold; } .muted { color: #666; }
"""


def thumbnail(path: str | Path, size: int = THUMBNAIL_PX) -> str:
    """A small JPEG of the image as a data URI; empty when it cannot be read (the row still shows)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except OSError:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_audit_page(
    title: str, summary: Sequence[str], rows: pd.DataFrame, photos: Mapping[str, list[tuple[str, str]]]
) -> str:
    """`photos[person]` lists the person's (image id, path); the row's own image (per-image fields) is outlined."""
    body = []
    for row in rows.itertuples(index=False):
        images = []
        for image_id, path in photos.get(row.person, []):
            uri = thumbnail(path)
            hit = ' class="hit"' if row.image == image_id else ""
            alt = html.escape(image_id)
            images.append(f'<img src="{uri}" alt="{alt}" title="{alt}"{hit}>' if uri else f"[{alt}]")
        where = html.escape(row.image or f"all {row.images} photos of the person")
        if row.reason:
            where += f"<br>{html.escape(row.reason)}"
        body.append(
            f'<tr><td>{row.rank}</td><td>{html.escape(str(row.person))}<br><span class="muted">{where}</span></td>'
            f'<td>{html.escape(row.field)}</td><td class="given">{html.escape(str(row.given))}'
            f' ({row.given_probability:.2f})</td><td class="suggested">{html.escape(str(row.suggested))}'
            f' ({row.confidence:.2f})</td><td class="photos">{"".join(images)}</td></tr>'
        )
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><ul>{lines}</ul>"
        "<table><tr><th>rank</th><th>person / image</th><th>field</th><th>given (probability)</th>"
        f"<th>suggested (probability)</th><th>photos</th></tr>{''.join(body)}</table></body></html>\n"
    )
