"""The web client's files, without a browser: both dictionaries complete, no markup built from strings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from web_client import STATIC_DIR

DICTIONARIES = {lang: STATIC_DIR / "i18n" / f"{lang}.json" for lang in ("zh-CN", "en")}
SCRIPTS = sorted((STATIC_DIR / "js").rglob("*.js"))
# Keys the code builds from a value (`urgency.${consult.urgency}` ...): every value it can meet.
FAMILIES = {
    "urgency": ["critical", "stat", "urgent", "routine"],
    "status": [
        "requested",
        "accepted",
        "in_review",
        "reported",
        "signed",
        "delivered",
        "declined",
        "cancelled",
    ],
    "report_status": ["draft", "preliminary", "final", "amended"],
    "signature": ["performing", "reviewing"],
    "role": ["sonographer", "township_doctor", "specialist", "admin"],
    "live": ["offline", "connecting", "live"],
    "sex": ["M", "F", "O"],
    "viewer.tool": ["window", "pan", "zoom", "measure"],
}


def _dictionary(lang: str) -> dict[str, str]:
    data = json.loads(DICTIONARIES[lang].read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_both_languages_have_the_same_keys_and_no_empty_value() -> None:
    zh, en = _dictionary("zh-CN"), _dictionary("en")
    assert set(zh) == set(en), (
        f"only zh-CN: {sorted(set(zh) - set(en))}, only en: {sorted(set(en) - set(zh))}"
    )
    for lang, dictionary in (("zh-CN", zh), ("en", en)):
        empty = [key for key, value in dictionary.items() if not isinstance(value, str) or not value.strip()]
        assert not empty, f"{lang} has empty values: {empty}"
        for key, value in dictionary.items():
            placeholders = set(re.findall(r"\{(\w+)\}", value))
            assert placeholders == set(re.findall(r"\{(\w+)\}", en[key])), f"{lang} {key}: other placeholders"


def test_zh_cn_is_written_in_chinese() -> None:
    zh = _dictionary("zh-CN")
    # Strings that are only placeholders, units or abbreviations may stay as they are.
    words = {key: re.sub(r"\{\w+\}", "", value) for key, value in zh.items()}
    chinese, word = re.compile(r"[\u4e00-\u9fff]"), re.compile(r"[A-Za-z]{4,}")
    untranslated = [key for key, value in words.items() if not chinese.search(value) and word.search(value)]
    assert not untranslated, untranslated


ELSEWHERE = re.compile(r"(?:src|href)=\"(?:https?:)?//|url\((?:https?:)?//|import[^;]*from\s+[\"']https?:")
# String literals of the code that are event types of /api/events, not dictionary keys.
EVENT_TYPES = {"study.stored"}


def _keys_used() -> set[str]:
    namespaces = {key.split(".")[0] for key in _dictionary("en")}
    used: set[str] = set()
    for script in SCRIPTS:
        for literal in re.findall(r"""["']([a-z_]+(?:\.[a-z_]+)+)["']""", script.read_text(encoding="utf-8")):
            if literal.split(".")[0] in namespaces and literal not in EVENT_TYPES:
                used.add(literal)
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    used.update(re.findall(r'data-i18n(?:-[a-z-]+)?="([^"]+)"', html))
    for prefix, values in FAMILIES.items():
        used.update(f"{prefix}.{value}" for value in values)
    return used


def test_every_key_the_app_uses_is_in_both_dictionaries() -> None:
    used = _keys_used()
    assert len(used) > 100
    for lang in DICTIONARIES:
        missing = sorted(used - set(_dictionary(lang)))
        assert not missing, f"{lang} lacks {missing}"


def test_every_dictionary_key_is_used() -> None:
    unused = sorted(set(_dictionary("en")) - _keys_used())
    assert not unused, f"keys nothing uses: {unused}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(STATIC_DIR)))
def test_scripts_never_parse_markup_or_log(script: Path) -> None:
    """Data reaches the page as text nodes only; nothing is written to the console."""
    source = script.read_text(encoding="utf-8")
    for pattern in (
        r"\.innerHTML\b",
        r"\.outerHTML\b",
        r"insertAdjacentHTML",
        r"document\.write",
        r"\beval\(",
        r"new Function\b",
        r"createContextualFragment",
        r"console\.",
        r"localStorage\.setItem\((?!STORAGE_KEY)",
    ):
        assert not re.search(pattern, source), f"{script.name} uses {pattern}"


def test_the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() -> None:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), "inline style or handler"
    for path in [STATIC_DIR / "index.html", STATIC_DIR / "css" / "app.css", *SCRIPTS]:
        text = path.read_text(encoding="utf-8")
        assert not ELSEWHERE.search(text), f"{path.name} loads something from another origin"
