"""The gettext catalogues of ``easync.i18n`` and the Babel steps that keep them:
``<lang>/LC_MESSAGES/easync.po`` (edited by translators) and ``.mo`` (compiled from it,
committed so that a wheel or a checkout works without a build step), ``easync.pot``
(the messages of the source).

``python -m easync.locale update`` extracts the messages from the source (``easync``,
``backends``: the ``easync.i18n`` markers ``_``, ``N_``, ``ngettext``, ``msg``,
``msg_n``) into ``easync.pot`` and merges them into every ``.po`` (new ones empty, gone
ones dropped); translate the empty entries, then ``python -m easync.locale compile``
writes the ``.mo`` files.  ``check`` says what is untranslated or not compiled.  Babel
is needed for these steps only (the ``test`` extra has it), never at run time.
"""

from __future__ import annotations

import ast
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from easync.i18n import DEFAULT, DOMAIN, KEYWORDS, LANGUAGES, LOCALE_DIR

#: where the messages are extracted from
SOURCES = (LOCALE_DIR.parent, LOCALE_DIR.parent.parent / "backends")
POT = LOCALE_DIR / f"{DOMAIN}.pot"


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.mo"


def messages(path: Path) -> Iterator[tuple[int, str | tuple[str, ...]]]:
    """(line, message) of each marked message of one source file: a call of an
    ``easync.i18n.KEYWORDS`` name (or method) with string literals, anywhere — inside
    f-strings too, which Babel's own Python extractor does not look into."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
            f, ast.Attribute) else ""
        positions = KEYWORDS.get(name)
        if positions is None or len(node.args) < max(positions):
            continue
        args = [node.args[i - 1] for i in positions]
        if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args):
            continue
        texts = tuple(str(a.value) for a in args if isinstance(a, ast.Constant))
        yield node.lineno, texts[0] if len(texts) == 1 else texts


def extract() -> Any:
    """The messages marked in the source, as a Babel ``Catalog`` (the template)."""
    from babel.messages.catalog import Catalog

    catalog = Catalog(project="easync", domain=DOMAIN, fuzzy=False)
    root = LOCALE_DIR.parent.parent
    for top in SOURCES:
        for path in sorted(top.rglob("*.py")):
            for lineno, message in messages(path):
                where = path.relative_to(root) if path.is_relative_to(root) else path
                catalog.add(message, None, [(where.as_posix(), lineno)])
    return catalog


def read_po(lang: str) -> Any:
    from babel.messages.pofile import read_po as _read

    with open(po_path(lang), "rb") as f:
        return _read(f, locale=lang, domain=DOMAIN)


def compiled(catalog: Any) -> bytes:
    """The ``.mo`` bytes of a catalogue (fuzzy entries left out, as gettext does)."""
    from babel.messages.mofile import write_mo

    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def untranslated(catalog: Any) -> list[str]:
    """The message ids of ``catalog`` with no translation, or a fuzzy one."""
    missing = []
    for m in catalog:
        if not m.id:
            continue
        strings = m.string if isinstance(m.string, (list, tuple)) else [m.string]
        if m.fuzzy or not all(strings):
            missing.append(m.id if isinstance(m.id, str) else m.id[0])
    return missing


def update() -> None:
    """Extract into ``easync.pot`` and merge it into every language's ``.po``."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import write_po

    template = extract()
    with open(POT, "wb") as f:
        write_po(f, template, width=88, omit_header=False, sort_output=False)
    for lang in LANGUAGES:
        path = po_path(lang)
        if path.exists():
            catalog = read_po(lang)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            catalog = Catalog(locale=lang, domain=DOMAIN, project="easync")
        catalog.update(template, update_header_comment=False, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        with open(path, "wb") as f:
            write_po(f, catalog, width=88, omit_header=False)


def compile_all() -> None:
    for lang in LANGUAGES:
        mo_path(lang).write_bytes(compiled(read_po(lang)))


def check() -> list[str]:
    """What is wrong with the catalogues, one line each (nothing: all is well)."""
    problems = []
    wanted = {m.id for m in extract() if m.id}
    for lang in LANGUAGES:
        catalog = read_po(lang)
        have = {m.id for m in catalog if m.id}
        problems += [f"{lang}: not in the catalogue: {mid!r}" for mid in wanted - have]
        if lang != DEFAULT:
            problems += [f"{lang}: untranslated: {mid!r}" for mid in untranslated(catalog)]
        if not mo_path(lang).exists() or mo_path(lang).read_bytes() != compiled(catalog):
            problems.append(f"{lang}: {mo_path(lang).name} is not compiled from "
                            f"{po_path(lang).name}: run python -m easync.locale compile")
    return problems
