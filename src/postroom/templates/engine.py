"""Rendering templates safely: sandboxed Jinja2, CSS inlining, HTML → text.

Templates are written by API users, so they are untrusted code. They run in Jinja2's
``SandboxedEnvironment`` (no ``__class__``/``__globals__``/``mro`` walks, no unsafe
``str.format``), with ``StrictUndefined`` (a missing variable is an error, not an empty
string) and autoescape for HTML (data cannot inject markup). Limits bound template size,
render time and output size, so one template cannot stall a worker or fill a mailbox.

Text parts are derived from the HTML with ``inscriptis`` (Apache-2.0, maintained, keeps
layout of tables and lists) when the template has none; ``html2text`` is GPL-3.0.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import css_inline
import jinja2
from inscriptis import get_text
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from postroom.errors import MessageError

#: a template's source (subject, html and text together) may be at most this long
MAX_TEMPLATE_CHARS = 512 * 1024
#: rendered html + text may be at most this long
MAX_OUTPUT_CHARS = 2 * 1024 * 1024
#: one render may take at most this long (checked as it runs)
MAX_RENDER_S = 2.0
#: the longest loop ``range`` a template may build
MAX_RANGE = 10_000


class TemplateError(MessageError):
    """A template cannot be compiled or rendered; says where and why."""

    code = "template"

    def __init__(self, message: str, *, part: str | None = None, line: int | None = None) -> None:
        where = part or ""
        if line is not None:
            where += f" line {line}"
        super().__init__(f"{where}: {message}" if where else message, field=part)
        self.part = part
        self.line = line


class RenderTimeout(Exception):
    """Raised inside a render that ran past its time budget."""


@dataclass(frozen=True)
class Source:
    """What a template version renders: a subject and at least one body part."""

    subject: str
    html: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str | None
    text: str | None


def _safe_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise OverflowError(f"range() of {len(r)} items; at most {MAX_RANGE}")
    return r


class _Sandbox(SandboxedEnvironment):
    """The sandbox with a bounded ``range`` and no callables beyond its filters."""

    def __init__(self, *, html: bool) -> None:
        super().__init__(
            autoescape=html,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
            cache_size=0,
        )
        self.globals = {"range": _safe_range}

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        # "x" * 10**10 or 9**9**9 would allocate or compute for ever: bound them first
        if operator == "**":
            if isinstance(right, int) and abs(right) > 1000:
                raise OverflowError("exponent is too large (at most 1000)")
            return left**right
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                if len(seq) * times > MAX_OUTPUT_CHARS:
                    raise OverflowError("repetition result is too large")
        return left * right

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # nothing private, and no format strings (they reach attributes the sandbox can't see)
        if attr.startswith("_") or attr in ("format", "format_map", "mro"):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))


_HTML = _Sandbox(html=True)
_PLAIN = _Sandbox(html=False)


def _env(part: str) -> _Sandbox:
    return _HTML if part == "html" else _PLAIN


def _parts(source: Source) -> dict[str, str]:
    parts = {"subject": source.subject}
    if source.html is not None:
        parts["html"] = source.html
    if source.text is not None:
        parts["text"] = source.text
    return parts


def check(source: Source) -> None:
    """Refuse a template that is too big, has no body, or does not compile."""
    if source.html is None and source.text is None:
        raise TemplateError("a template needs html or text content", part="content")
    size = sum(len(p) for p in _parts(source).values())
    if size > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the template is {size} characters; at most {MAX_TEMPLATE_CHARS}")
    for part, text in _parts(source).items():
        _compile(part, text)


@functools.lru_cache(maxsize=512)
def _compile(part: str, text: str) -> jinja2.Template:
    try:
        return _env(part).from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", part=part, line=exc.lineno) from None


@functools.lru_cache(maxsize=512)
def _names(part: str, text: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_env(part).parse(text)))


def referenced_names(source: Source) -> frozenset[str]:
    """Top-level names the template reads (without the sandbox's own globals)."""
    names: set[str] = set()
    for part, text in _parts(source).items():
        names |= _names(part, text)
    return frozenset(names - set(_HTML.globals))


def _with_deadline(template: jinja2.Template, data: Mapping[str, Any]) -> str:
    """Render, aborting with RenderTimeout once MAX_RENDER_S has passed.

    A trace function checks the clock on each call and line inside the template code
    (only frames compiled from a template), so a runaway loop stops within budget.
    """
    deadline = time.monotonic() + MAX_RENDER_S
    previous = sys.gettrace()

    def tracer(frame: FrameType, _event: str, _arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise RenderTimeout()
        return tracer if frame.f_code.co_filename == "<template>" else None

    sys.settrace(tracer)
    try:
        return template.render(data)
    finally:
        sys.settrace(previous)


def _render_part(part: str, text: str, data: Mapping[str, Any]) -> str:
    template = _compile(part, text)
    if part != "subject":
        # literal text and plain names: joined without Jinja's context and output
        # machinery (most of a body's render); anything else renders below
        html = part == "html"
        pieces = _plain_pieces(text, html=html)
        if pieces is not None and (joined := _join(pieces, data, html=html)) is not None:
            return joined
    try:
        if _only_outputs(text):
            # literal text and outputs of plain names: no loop or call that could run
            # away, so no clock-checking trace (a large part of a small render's cost)
            return template.render(data)
        return _with_deadline(template, data)
    except RenderTimeout:
        raise TemplateError(f"rendering took longer than {MAX_RENDER_S:g} s", part=part) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(exc.message or "undefined variable", part=part) from None
    except jinja2.TemplateError as exc:  # includes SecurityError from the sandbox
        raise TemplateError(f"{type(exc).__name__}: {exc}", part=part) from None
    except (MemoryError, RecursionError) as exc:
        raise TemplateError(f"{type(exc).__name__}: the template is too costly", part=part) from exc
    except Exception as exc:  # a filter or operation failed on the data: say what
        raise TemplateError(f"{type(exc).__name__}: {exc}", part=part) from None


@functools.lru_cache(maxsize=512)
def _plain_pieces(text: str, *, html: bool = False) -> tuple[tuple[bool, str], ...] | None:
    """A part of only literal text and ``{{ name }}`` as (is_name, text) pieces, so
    that it renders by joining strings (bulk sends render a subject per recipient at
    enqueue, workers a body per message); None for anything more (filters,
    attributes, tags), which Jinja renders. ``html``: parsed as the HTML part is."""
    body = (_HTML if html else _PLAIN).parse(text).body
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None if body else ()
    pieces: list[tuple[bool, str]] = []
    for node in body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            pieces.append((False, node.data))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            pieces.append((True, node.name))
        else:
            return None
    return tuple(pieces)


@functools.lru_cache(maxsize=512)
def _slots_of(
    pieces: tuple[tuple[bool, str], ...],
) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...], tuple[str, ...]]:
    """The pieces' literal text (a name's place empty), each name's
    (place, index into the distinct names) and the distinct names: a render converts
    each name once and fills a list copy of them (a bulk template repeats names)."""
    names: dict[str, int] = {}
    slots = []
    for place, (is_name, text) in enumerate(pieces):
        if is_name:
            slots.append((place, names.setdefault(text, len(names))))
    literal = tuple("" if is_name else text for is_name, text in pieces)
    return literal, tuple(slots), tuple(names)


def _join(
    pieces: tuple[tuple[bool, str], ...], data: Mapping[str, Any], *, html: bool = False
) -> str | None:
    """The pieces with each name's value, as Jinja would output it: a string escaped
    in HTML (markupsafe, as autoescape does), a number as ``str()``. None when a value
    is missing or of another kind: Jinja then renders (and raises what it raises)."""
    literal, slots, names = _slots_of(pieces)
    values = []
    for name in names:
        if isinstance(value := data.get(name), str):
            values.append(str(escape(value)) if html else value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values.append(str(value))
        else:
            return None
    out = list(literal)
    for place, index in slots:
        out[place] = values[index]
    return "".join(out)


@functools.lru_cache(maxsize=512)
def _text_template(html: str) -> str | None:
    """The text part's template, derived once from an HTML template that holds only
    literal HTML and ``{{ name }}`` / ``{{ name.field }}`` outputs: converting the
    template instead of every rendered message saves the HTML-to-text cost per
    recipient (a value is escaped in the HTML and unescaped again by the conversion,
    so the text is the same). Anything else (tags, filters, calls) returns None and
    each rendered HTML is converted instead."""
    if not _only_outputs(html):
        return None
    derived = html_to_text(html)
    try:
        _compile("text", derived)
    except TemplateError:
        return None
    return derived


#: an output inside a tag (an attribute, where CSS may be merged into it) or a style block
_OUTPUT_IN_MARKUP = re.compile(r"<[^>]*\{\{|<style[^>]*>[^<]*\{\{", re.IGNORECASE)


@functools.lru_cache(maxsize=512)
def _inlined_template(html: str) -> str | None:
    """The HTML template with its CSS inlined once, when that is the same as inlining
    every rendered message: the template holds only literal HTML and ``{{ name }}`` /
    ``{{ name.field }}`` outputs, none inside a tag or a ``<style>`` block, so the
    values land in text that inlining does not touch (an escaped value may come out
    escaped differently, e.g. ``&#34;`` for ``"``, which reads the same). Anything
    else returns None and each rendered message is inlined instead."""
    if not _only_outputs(html) or _OUTPUT_IN_MARKUP.search(html):
        return None
    try:
        inlined = inline_css(html)
        if inlined.count("{{") != html.count("{{"):
            return None
        _compile("html", inlined)
    except TemplateError:
        return None
    return inlined


@functools.lru_cache(maxsize=1024)
def _only_outputs(text: str) -> bool:
    """Only literal text and ``{{ name }}`` / ``{{ name.field }}`` outputs."""
    for node in _HTML.parse(text).body:
        if not isinstance(node, nodes.Output):
            return False
        for child in node.nodes:
            if isinstance(child, nodes.Getattr):
                child = child.node
            if not isinstance(child, nodes.TemplateData | nodes.Name):
                return False
    return True


def render_subject(source: Source, data: Mapping[str, Any]) -> str:
    """Only the subject (cheap: for the records, when mail is queued)."""
    return subject_renderer(source)(data)


def subject_renderer(source: Source) -> Callable[[Mapping[str, Any]], str]:
    """``render_subject`` for one source, parsed once: a bulk send renders the same
    subject for every recipient."""
    text = source.subject
    _compile("subject", text)  # the same errors as a full render
    pieces = _plain_pieces(text)

    def render(data: Mapping[str, Any]) -> str:
        joined = _join(pieces, data) if pieces is not None else None
        if joined is None:
            joined = _render_part("subject", text, data)
        subject = joined.strip()
        if "\n" in subject or "\r" in subject:
            raise TemplateError("the rendered subject must be one line", part="subject")
        return subject

    return render


def render(source: Source, data: Mapping[str, Any]) -> Rendered:
    """Render all parts with ``data``; raises TemplateError with the part and reason."""
    subject = render_subject(source, data)
    html = text = None
    if source.html is not None:
        inlined = _inlined_template(source.html)
        if inlined is not None:
            html = _render_part("html", inlined, data)
        else:
            html = inline_css(_render_part("html", source.html, data))
    if source.text is not None:
        text = _render_part("text", source.text, data)
    elif html is not None:
        derived = _text_template(source.html) if source.html is not None else None
        if derived is not None:
            text = _render_part("text", derived, data).strip() + "\n"
        else:
            text = html_to_text(html)
    size = len(html or "") + len(text or "")
    if size > MAX_OUTPUT_CHARS:
        raise TemplateError(
            f"the rendered message is {size} characters; at most {MAX_OUTPUT_CHARS}"
        )
    return Rendered(subject=subject, html=html, text=text)


_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=False)


def inline_css(html: str) -> str:
    """Move ``<style>`` rules onto the elements (mail clients drop style blocks)."""
    try:
        return str(_INLINER.inline(html))
    except ValueError as exc:
        raise TemplateError(f"CSS cannot be inlined: {exc}", part="html") from None


def html_to_text(html: str) -> str:
    """A readable plain-text alternative of ``html``."""
    return str(get_text(html)).strip() + "\n"
