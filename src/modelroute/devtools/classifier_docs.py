"""The keyword section of ``docs/classifier.md``, generated from the classifier's data file.

The default lists live once, in ``modelroute/resources/classifier_keywords.json``;
the doc shows them in full between two marker comments, written by
``make classifier-docs`` and never edited by hand
(``tests/routing/test_classifier_docs.py`` fails while the two differ).  Each
list is headed by the ``ModelRoute`` field that overrides it and that field's
own description, so neither the names nor the wording are kept twice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelroute.resources.classifier import ClassifierSpec
from modelroute.resources.classifier_defaults import DEFAULTS, RESOURCE, DefaultKeywords

DOC = Path("docs/classifier.md")
BEGIN = (
    "<!-- BEGIN generated from src/modelroute/resources/"
    + RESOURCE
    + " by `make classifier-docs`; do not edit -->"
)
END = "<!-- END generated keyword lists -->"
WIDTH = 100

# field of ``DefaultKeywords`` -> the (section, field) of ``ClassifierSpec`` it is the default of
SPEC_FIELDS: dict[str, tuple[str, str]] = {
    "strong": ("reasoning", "strong"),
    "weak": ("reasoning", "weak"),
    "negative": ("reasoning", "negative"),
    "puzzle_cues": ("reasoning", "puzzle_cues"),
    "light": ("light", "keywords"),
    "light_exclude": ("light", "exclude"),
}


def _wrap(items: tuple[str, ...]) -> list[str]:
    """``a``, ``b``, … filled to WIDTH, never breaking inside a code span."""
    lines: list[str] = []
    line = ""
    for i, item in enumerate(items):
        word = f"`{item}`" + ("," if i < len(items) - 1 else "")
        if line and len(line) + 1 + len(word) > WIDTH:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return lines


def render_section(defaults: DefaultKeywords = DEFAULTS) -> str:
    """The Markdown between (and including) the two markers."""
    spec = ClassifierSpec()
    out = [BEGIN, ""]
    for key, (section, field) in SPEC_FIELDS.items():
        model = getattr(spec, section)
        info = type(model).model_fields[field]
        path = f"{ClassifierSpec.model_fields[section].alias or section}.{info.alias or field}"
        values: tuple[str, ...] = getattr(defaults, key)
        out.append(f"**`{path}`** ({len(values)}): {info.description}")
        out.append("")
        out.extend(_wrap(values))
        out.append("")
    out.append(END)
    return "\n".join(out)


def update(doc: str, defaults: DefaultKeywords = DEFAULTS) -> str:
    """``doc`` with its generated section replaced; refuses a doc that lost its markers."""
    start, stop = doc.find(BEGIN), doc.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"{DOC} has lost its generated-section markers ({BEGIN!r} … {END!r})")
    return doc[:start] + render_section(defaults) + doc[stop + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the section in {DOC}")
    parser.add_argument("--root", default=".", help="repository root")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(render_section() + "\n")
        return 0
    path = Path(args.root) / DOC
    path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
