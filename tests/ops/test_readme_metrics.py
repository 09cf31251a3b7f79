"""The README's Metrics section lists exactly the metric families the relay exports,
each with its type and labels."""

from __future__ import annotations

import re
from pathlib import Path

from relay.ops.metrics import RelayMetrics

README = Path(__file__).resolve().parents[2] / "README.md"
#: A table row of the Metrics section: | `name` | type | `label`, `label` | meaning |
ROW = re.compile(r"^\|\s*`(realtime_relay_[a-z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|(.*)\|\s*$")


def documented() -> dict[str, tuple[str, frozenset[str], str]]:
    """Name -> (type, labels, meaning) of each row in the README's Metrics section."""
    text = README.read_text()
    start = text.index("\n### Metrics\n")
    end = text.index("\n### ", start + 1)
    rows: dict[str, tuple[str, frozenset[str], str]] = {}
    for line in text[start:end].splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        name, kind, labels, meaning = match.groups()
        assert name not in rows, f"{name} is listed twice"
        rows[name] = (kind.strip(), frozenset(re.findall(r"`([a-z_]+)`", labels)), meaning.strip())
    return rows


def exported() -> dict[str, tuple[str, frozenset[str]]]:
    """Name (as scraped: counters with ``_total``) -> (type, labels) of every family."""
    families: dict[str, tuple[str, frozenset[str]]] = {}
    for family in RelayMetrics(process=False).registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {key for sample in family.samples for key in sample.labels} - {"le"}
        families[name] = (family.type, frozenset(labels))
    return families


def test_the_readme_lists_every_exported_family_and_nothing_else() -> None:
    listed, code = documented(), exported()
    assert len(code) >= 25
    assert set(code) - set(listed) == set(), "exported but not in the README"
    assert set(listed) - set(code) == set(), "in the README but not exported"


def test_each_family_has_its_type_labels_and_a_meaning() -> None:
    listed = documented()
    for name, (kind, labels) in exported().items():
        documented_kind, documented_labels, meaning = listed[name]
        assert documented_kind == kind, name
        assert documented_labels == labels, name
        assert len(meaning) > 10, name
