"""Great Expectations Data Docs that are safe to open and work offline.

Great Expectations writes the unexpected values of a failed expectation into its pages as they are: an answer
``<img src=x onerror=...>`` would run in the analyst's browser. So, before rendering, every value GX will show
is HTML-escaped and its lists are capped (:func:`prepare_result`, also what keeps a file with 100,000 invalid
rows from becoming a 100,000-row page); after rendering, every page is made self-contained
(:func:`make_offline`): scripts and the CDN stylesheets (jQuery, Bootstrap, Vega, Font Awesome) are removed, a
small local stylesheet takes their place, and a Content-Security-Policy that allows no script and no network
request is put at the top of each page. GX's own index page builds its table with jQuery, so it is replaced by
a plain one (:func:`write_index`) listing every validation page in the folder.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment

# Scripts: none (GX's inline scripts only drive jQuery widgets); network: none; GX's local images and fonts.
CSP = (
    "default-src 'none'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'"
)
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
STYLESHEET = "static/styles/consult-offline.css"
MANIFEST = "consult-pages.json"

# What Bootstrap and Font Awesome did for the parts of GX's pages that hold content.
_OFFLINE_CSS = """\
body { font-family: system-ui, sans-serif; margin: 1rem; color: #212529; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #dee2e6; padding: .25rem .5rem; vertical-align: top; text-align: left; }
.collapse:not(.show), .modal, .ge-walkthrough-modal, .d-none, .sticky { display: none; }
.alert-secondary { background: #e2e3e5; padding: .5rem; margin-top: 1rem; }
.badge { background: #6c757d; color: #fff; border-radius: .25rem; padding: 0 .3rem; }
.text-danger { color: #b02a37; } .text-success { color: #146c43; }
.show-scrollbars { max-height: 20rem; overflow: auto; white-space: pre-wrap; word-break: break-word; }
"""

_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)
_REMOTE_IMG = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE | re.DOTALL)
_ICONS = {
    "fa-check-circle": ("text-success", "\u2714"),  # ✔
    "fa-times": ("text-danger", "\u2718"),  # ✘
    "fa-exclamation-triangle": ("text-danger", "!"),
}
_ICON = re.compile(r'<i class="([^"]*\bfa-[^"]*)"\s*>\s*</i>')
# GX links its favicon one folder too high on validation pages: a request for a file that is not there.
_FAVICON = re.compile(r"<link\b[^>]*\brel\s*=\s*[\"']?shortcut icon[^>]*>", re.IGNORECASE)
# Event-handler attributes of GX's own buttons (blocked by the CSP anyway: removed so that nothing is attempted).
# Only inside tags: escaped values hold no "<", so text such as "onerror=..." in an answer is never touched.
_TAG = re.compile(r"<[A-Za-z][^<>]*>")
_HANDLER = re.compile(r"""\s+on[a-z]+\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)
_HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)


def _escaped(value: Any, cap: int) -> Any:
    """``value`` with every string HTML-escaped and every list cut to ``cap`` items, recursively."""
    if isinstance(value, str):
        return html.escape(value, quote=True)
    if isinstance(value, dict):
        return {_escaped(key, cap) if isinstance(key, str) else key: _escaped(item, cap) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(item, cap) for item in list(value)[:cap]]
    return value


def prepare_result(gx_result: Any, cap: int) -> None:
    """Escape and cap, in place, what GX shows of each expectation's result (unexpected values, their rows and
    counts, observed values). The GX result object is made for the Data Docs only; the failing rows were read
    from it before (see :func:`consult.ingest.validation.run_suite`)."""
    for item in gx_result.results:
        if item.result:
            item.result = _escaped(dict(item.result), cap)


def _icon(match: re.Match[str]) -> str:
    classes = match.group(1)
    for name, (css, glyph) in _ICONS.items():
        if re.search(rf"\b{name}\b", classes):
            return f'<span class="{css}">{glyph}</span>'
    return ""


def _relative_stylesheet(page: Path, folder: Path) -> str:
    depth = len(page.relative_to(folder).parts) - 1
    return "../" * depth + STYLESHEET


def make_offline(folder: Path) -> list[Path]:
    """Strip scripts and remote assets from every page under ``folder``, add the local stylesheet and the CSP;
    returns the pages. Idempotent: a page already processed comes out the same."""
    (folder / STYLESHEET).parent.mkdir(parents=True, exist_ok=True)
    (folder / STYLESHEET).write_text(_OFFLINE_CSS, encoding="utf-8")
    pages = sorted(folder.rglob("*.html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if CSP_META in text:
            continue
        text = _SCRIPT.sub("", text)
        text = _REMOTE_LINK.sub("", text)
        text = _REMOTE_IMG.sub("", text)
        text = _FAVICON.sub("", text)
        text = _TAG.sub(lambda tag: _HANDLER.sub("", tag.group(0)), text)
        text = _ICON.sub(_icon, text)
        head = (
            f'{CSP_META}\n<link rel="stylesheet" href="{_relative_stylesheet(page, folder)}">'
        )
        text, found = _HEAD.subn(lambda match, head=head: match.group(0) + "\n" + head, text, count=1)
        if not found:
            text = head + text
        page.write_text(text, encoding="utf-8")
    return pages


@dataclass(frozen=True)
class PageEntry:
    """One validation page in the index: which file, when, and whether every expectation held."""

    page: str
    file: str
    run_time: str
    success: bool
    failed_expectations: int
    sha256: str = ""


def record_pages(folder: Path, entries: Iterable[PageEntry]) -> None:
    """Add entries to the folder's manifest, which the index is built from (pages of earlier runs stay)."""
    path = folder / MANIFEST
    known: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for entry in entries:
        known[entry.page] = vars(entry)
    path.write_text(json.dumps(known, indent=1, ensure_ascii=False, sort_keys=True), encoding="utf-8")


def has_page_for(folder: Path, sha256: str) -> bool:
    """Whether the Data Docs in ``folder`` hold a validation page of the file with this digest."""
    path = folder / MANIFEST
    known: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return any(entry.get("sha256") == sha256 and (folder / entry["page"]).is_file() for entry in known.values())


_INDEX = Environment(autoescape=True).from_string("""\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{{ csp_meta | safe }}
<link rel="stylesheet" href="{{ stylesheet }}">
<title>Data Docs</title></head>
<body>
<h1>Data Docs</h1>
<p>One page per validated response file, newest first. Built {{ built }}.</p>
<table>
<thead><tr><th>Validated</th><th>File</th><th>Result</th></tr></thead>
<tbody>
{% for entry in entries %}
<tr><td>{{ entry.run_time }}</td><td><a href="{{ entry.page }}">{{ entry.file }}</a></td>
<td>{% if entry.success %}<span class="text-success">&#10004; all expectations met</span>{% else %}<span class="text-danger">&#10008; {{ entry.failed_expectations }} expectation(s) failed</span>{% endif %}</td></tr>
{% endfor %}
</tbody></table>
</body></html>
""")


def write_index(folder: Path) -> Path:
    """The index page: every validation page of the manifest (and any other page found), newest first."""
    path = folder / MANIFEST
    known: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for page in sorted((folder / "validations").rglob("*.html")) if (folder / "validations").is_dir() else []:
        relative = page.relative_to(folder).as_posix()
        known.setdefault(relative, {"page": relative, "file": page.stem, "run_time": page.parent.name,
                                    "success": False, "failed_expectations": "?"})
    entries = sorted(
        (entry for entry in known.values() if (folder / entry["page"]).is_file()),
        key=lambda entry: entry["run_time"], reverse=True,
    )
    index = folder / "index.html"
    index.write_text(
        _INDEX.render(entries=entries, csp_meta=CSP_META, stylesheet=STYLESHEET,
                      built=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        encoding="utf-8",
    )
    return index
