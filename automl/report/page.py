"""One self-contained HTML page: plotly.js inlined once, every figure beside its note; no server, no network."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from automl.atomic import atomic_path
from automl.report.figures import Section

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; margin-top: 0; }
section { border-top: 1px solid #ddd; padding-top: 0.5em; } .note { color: #8a4b00; }
nav a { margin-right: 1em; }
"""


def render_page(title: str, summary: Sequence[str], sections: Sequence[Section]) -> str:
    parts, js_included = [], False
    for section in sections:
        body = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
        if section.figure is not None:
            # The first figure carries plotly.js itself, inline: the page works offline, from a file.
            body += section.figure.to_html(
                full_html=False, include_plotlyjs=not js_included, div_id=f"plot-{section.key}"
            )
            js_included = True
        parts.append(f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>{body}</section>')
    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><ul class="meta">{lines}</ul>'
        f"<nav>{nav}</nav>{''.join(parts)}</body></html>\n"
    )


def write_page(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
