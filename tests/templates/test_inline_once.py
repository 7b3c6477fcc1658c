"""CSS is inlined into a template once when that gives the same mail as inlining each
rendered message, and per message otherwise."""

from __future__ import annotations

import html

import pytest

from postroom.templates import engine

STYLE = "<html><head><style>p { color: #123456; } .x { font-weight: bold; }</style></head>"


def per_message(source: engine.Source, data: dict[str, object]) -> str:
    assert source.html is not None
    return engine.inline_css(engine._render_part("html", source.html, data))


def test_a_template_of_plain_outputs_is_inlined_once_with_the_same_result() -> None:
    source = engine.Source(
        subject="s", html=STYLE + "<body><p class='x'>Hi {{ name }}, {{ order.id }}</p></body>"
    )
    assert source.html is not None and engine._inlined_template(source.html) is not None
    data: dict[str, object] = {"name": 'Ann "Q" & <b>', "order": {"id": 7}}
    once = engine.render(source, data).html
    assert once is not None and 'style="color: #123456;font-weight: bold;"' in once
    # the same document: only the escaping of a quote in a value may differ
    assert html.unescape(once) == html.unescape(per_message(source, data))
    assert "&lt;b&gt;" in once  # values stay escaped


@pytest.mark.parametrize(
    "body",
    [
        "<p style='margin: {{ size }}px'>x</p>",  # an output in an attribute
        "<p class='{{ size }}'>x</p>",
        "{% if size %}<p>x</p>{% endif %}",  # tags
        "<p>{{ size | string }}</p>",  # filters
        "<style>p { margin: {{ size }}px }</style><p>x</p>",
    ],
)
def test_anything_else_is_inlined_per_message(body: str) -> None:
    source = engine.Source(subject="s", html=STYLE + "<body>" + body + "</body>")
    assert source.html is not None and engine._inlined_template(source.html) is None
    data: dict[str, object] = {"size": 3}
    assert engine.render(source, data).html == per_message(source, data)
