"""The sandboxed renderer: escapes refused, limits held, CSS inlined, text derived."""

from __future__ import annotations

import time

import pytest

from postroom.templates import engine
from postroom.templates.engine import Source, TemplateError, render

#: attempts to leave the sandbox; each must fail as a TemplateError and leak nothing
ESCAPES = [
    "{{ x.__class__ }}",
    "{{ x.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.mro() }}",
    "{{ x.mro }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ range.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ '{0.__class__.__mro__}'.format_map({'0': x}) }}",
    "{{ '%s' % x.__class__ }}",
    "{{ x|attr('__class__') }}",
    "{{ (x|attr('__cl' ~ 'ass__')).__base__ }}",
    "{{ request.application.__globals__ }}",
    "{{ config.items() }}",
    "{{ x.__init__.__globals__['__builtins__']['open']('/etc/passwd').read() }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
]


@pytest.mark.parametrize("attempt", ESCAPES)
def test_sandbox_escape_attempts_fail_as_template_errors(attempt: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(Source(subject="s", text=attempt), {"x": 42})
    message = str(caught.value)
    for leak in ("<class", "<function", "<module", "<built-in", "root:", " at 0x"):
        assert leak not in message


def test_autoescape_in_html_and_not_in_text() -> None:
    out = render(
        Source(subject="Hi {{ name }}", html="<p>{{ name }}</p>", text="{{ name }}"),
        {"name": "<script>x</script>"},
    )
    assert "&lt;script&gt;" in (out.html or "") and "<script>" not in (out.html or "")
    assert out.text == "<script>x</script>"
    assert out.subject == "Hi <script>x</script>"


def test_strict_undefined_names_the_variable() -> None:
    with pytest.raises(TemplateError, match="'name' is undefined"):
        render(Source(subject="Hi", text="{{ name }}"), {})


def test_a_subject_that_renders_to_two_lines_is_refused() -> None:
    with pytest.raises(TemplateError, match="one line"):
        render(Source(subject="{{ a }}", text="x"), {"a": "one\nBcc: x@evil.example"})


def test_css_is_inlined_and_a_text_part_is_derived() -> None:
    html = (
        "<style>p.lead { color: #c00; } td { padding: 4px }</style>"
        "<p class='lead'>Hello {{ name }}</p>"
        "<ul><li>one</li><li>two</li></ul><a href='https://example.com/x'>link</a>"
    )
    out = render(Source(subject="s", html=html), {"name": "Ann"})
    assert '<p class="lead" style="color: #c00;">Hello Ann</p>' in (out.html or "")
    assert "<style>" not in (out.html or "")
    text = out.text or ""
    assert "Hello Ann" in text and "one" in text and "two" in text
    assert "<" not in text


def test_a_template_that_does_not_compile_names_part_and_line() -> None:
    with pytest.raises(TemplateError) as caught:
        engine.check(Source(subject="s", html="<p>\n{% if x %}\n<b>open</b>\n"))
    assert caught.value.part == "html"
    assert caught.value.line is not None
    assert str(caught.value).startswith("html line")


def test_size_limits() -> None:
    with pytest.raises(TemplateError, match="characters; at most"):
        engine.check(Source(subject="s", text="x" * (engine.MAX_TEMPLATE_CHARS + 1)))
    with pytest.raises(TemplateError, match="too large"):
        render(Source(subject="s", text="{{ 'x' * 100000000 }}"), {})
    with pytest.raises(TemplateError, match="exponent"):
        render(Source(subject="s", text="{{ 9 ** 99999999 }}"), {})
    with pytest.raises(TemplateError, match="too large"):
        render(Source(subject="s", text="{{ x * 3 }}"), {"x": "y" * engine.MAX_OUTPUT_CHARS})


def test_a_runaway_loop_stops_at_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MAX_RENDER_S", 0.2)
    loop = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}"
    t0 = time.monotonic()
    with pytest.raises(TemplateError, match="longer than"):
        render(Source(subject="s", text=loop), {})
    assert time.monotonic() - t0 < 5


def test_the_rendered_output_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MAX_OUTPUT_CHARS", 1000)
    with pytest.raises(TemplateError, match="rendered message"):
        render(Source(subject="s", text="{% for i in range(500) %}abcd{% endfor %}"), {})


def test_text_from_a_simple_html_template_is_the_same_as_from_its_rendered_html() -> None:
    html = (
        "<style>p { color: red }</style><h1>Hi {{ name }}</h1><p>Order <b>{{ order.id }}</b>"
        " ships to {{ city }}.</p><ul><li>{{ item }}</li></ul><a href='{{ link }}'>track</a>"
    )
    data = {"name": "Ann & <Bo>", "order": {"id": 42}, "city": "Köln", "item": "Cup", "link": "x"}
    fast = render(Source(subject="s", html=html), data)
    assert engine._text_template(html) is not None
    assert fast.text == engine.html_to_text(fast.html or "")
    assert "Hi Ann & <Bo>" in (fast.text or "") and "Order 42 ships to Köln." in (fast.text or "")
    # templates with tags or filters convert each rendered message instead
    assert engine._text_template("<p>{% if a %}x{% endif %}</p>") is None
    assert engine._text_template("<p>{{ a|upper }}</p>") is None


@pytest.mark.parametrize("part", ["html", "text"])
@pytest.mark.parametrize(
    "value", ["Ann \"Q\" & <b>'x'", "", 7, -3, 10.9, 1e20, True, None, [1, 2], {"a": 1}]
)
def test_a_part_of_plain_names_joins_to_what_jinja_renders(part: str, value: object) -> None:
    text = "<p>Hi {{ name }}</p>\n{{ name }}{{ other }} end\n"
    data = {"name": value, "other": "&"}
    pieces = engine._plain_pieces(text, html=part == "html")
    assert pieces is not None
    joined = engine._join(pieces, data, html=part == "html")
    # strings and numbers are joined; anything else is left to Jinja
    assert (joined is not None) == (isinstance(value, str | int | float) and value is not True)
    jinja = engine._compile(part, text).render(data)
    assert engine._render_part(part, text, data) == jinja


def test_a_missing_name_in_a_joined_part_is_still_strict() -> None:
    with pytest.raises(engine.TemplateError, match="'other' is undefined"):
        engine._render_part("html", "<p>{{ name }} {{ other }}</p>", {"name": "x"})
