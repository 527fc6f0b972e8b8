"""The report's document model: blocks and their two renderings.

The report's content is a list of blocks (:class:`Heading`, :class:`Para`, :class:`Bullets`,
:class:`Table`, :class:`Image`); :func:`to_markdown` and :func:`to_html` render the same blocks,
so both files say the same thing. The HTML is self-contained: styles inline, every image
embedded as a ``data:image/png;base64`` URI, no external asset.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import numpy as np

__all__ = ["Heading", "Para", "Bullets", "Table", "Image", "Block", "to_markdown", "to_html", "fmt",
           "counts_text", "place"]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    name: str          # file name next to report.md (the PNG)
    alt: str


Block = Union[Heading, Para, Bullets, Table, Image]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """Markdown; images are links to the PNG files next to ``report.md``."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |",
                     "|" + "|".join(" --- " for _ in b.header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.name})")
    return "\n\n".join(out) + "\n"


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}"
        "table{border-collapse:collapse;margin:0.6em 0;font-size:0.88em}"
        "th,td{border:1px solid #ccc;padding:2px 7px;text-align:right}th{background:#f2f2f2}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:0.5em 0}"
        "h2{border-bottom:1px solid #ddd;padding-bottom:2px;margin-top:1.6em}ul{margin:0.3em 0}")


def to_html(blocks: Sequence[Block], images: Mapping[str, bytes], title: str) -> str:
    """One self-contained HTML page: inline CSS, images as base64 data URIs."""
    esc = html.escape
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{esc(b.anchor)}"' if b.anchor else ""
            out.append(f"<h{b.level}{anchor}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image) and b.name in images:
            data = base64.b64encode(images[b.name]).decode("ascii")
            out.append(f'<img alt="{esc(b.alt)}" src="data:image/png;base64,{data}">')
    out.append("</body></html>\n")
    return "\n".join(out)


# ----------------------------------------------------------------------------- formatting
def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table: integers as such, floats with ``digits`` decimals, missing as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}" if abs(float(value)) < 1e4 else f"{float(value):.4g}"


def counts_text(table: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in table.items()) or "none"


def place(figures: dict[str, tuple[str, bytes | None]], images: dict[str, bytes], missing: str) -> list[Any]:
    """Image blocks for the drawn figures (their bytes go into ``images``), a sentence for the others."""
    blocks: list[Any] = []
    for name, (alt, data) in figures.items():
        if data is None:
            blocks.append(Para(f"{alt[0].upper()}{alt[1:]}: {missing}."))
        else:
            images[name] = data
            blocks.append(Image(name, alt))
    return blocks
