"""The docs hold together: the README's two commands are CI's, its API map covers
every public package, every docs page is indexed, and every relative link lands.

Links are checked the way GitHub renders them: a relative target must be a file
or folder of the repository, and a `#fragment` into a Markdown file must be one
of that file's heading anchors.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from services import topology
from services.launcher import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _prose(markdown: str) -> str:
    """The text outside fenced code blocks and code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def _section(markdown: str, title: str) -> str:
    """The body of the `## title` section, up to the next heading of level two."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: rendered text, lowercased, punctuation dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"[`*]", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, ..."""
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for match in HEADING.finditer(FENCE.sub("", markdown)):
        base = github_anchor(match.group(2))
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def relative_links(page: Path) -> list[str]:
    """The links of a page that point inside the repository (or inside the page)."""
    targets = LINK.findall(_prose(page.read_text()))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def _broken(page: Path, target: str) -> str | None:
    path_part, _, fragment = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page
    if not resolved.is_relative_to(ROOT) or not resolved.exists():
        return f"{target}: no such file"
    if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text()):
        return f"{target}: {resolved.relative_to(ROOT)} has no heading #{fragment}"
    return None


def test_the_anchor_rule_matches_githubs() -> None:
    assert github_anchor("The Orders API (seed 001)") == "the-orders-api-seed-001"
    assert github_anchor("What `./shop up` does") == "what-shop-up-does"
    assert github_anchor("Dead letters: the strategy") == "dead-letters-the-strategy"
    assert github_anchor("Load: the event gateway (seed 003's proof of load)") == (
        "load-the-event-gateway-seed-003s-proof-of-load"
    )
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    page = ROOT / "docs" / "README.md"
    assert _broken(page, "orders.md") is None
    assert _broken(page, "orders.md#the-orders-api-seed-001") is None
    assert _broken(page, "no-such-page.md") == "no-such-page.md: no such file"
    assert _broken(page, "orders.md#nowhere") == (
        "orders.md#nowhere: docs/orders.md has no heading #nowhere"
    )
    assert _broken(page, "../../outside.md") == "../../outside.md: no such file"
    sample = tmp_path / "sample.md"
    sample.write_text("[a](x.md) `[b](y.md)` [c](https://example.com)\n```\n[d](z.md)\n```\n")
    assert relative_links(sample) == ["x.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = [problem for t in relative_links(page) if (problem := _broken(page, t))]
    assert broken == []


def _commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_test_command_is_what_ci_runs() -> None:
    two = _section(README.read_text(), "The two commands")
    block = re.search(r"```sh\n(.*?)```", two, re.S)
    assert block, "the two commands are in a sh code block"
    start, test = _commands(block.group(1))
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci_commands = [line for line in ci if line.startswith("./shop")]
    assert start == "./shop up"
    assert ci_commands == [test]


def test_the_two_commands_are_verbs_of_the_shop_script() -> None:
    dispatch = re.search(r"^  ([a-z|-]+)\) ;;$", (ROOT / "shop").read_text(), re.M)
    assert dispatch
    verbs = set(dispatch.group(1).split("|"))
    assert {"up", "test", "status"} <= verbs


def test_the_readme_says_where_a_running_platform_listens() -> None:
    section = _section(README.read_text(), "Where a running platform listens")
    assert "`./shop status`" in section
    assert "/docs" in section


def _openapi_packages() -> list[str]:
    openapi = ROOT / "gen" / "openapi"
    return sorted(
        ".".join(path.relative_to(openapi).parent.parts) for path in openapi.rglob("*.openapi.json")
    )


def test_the_api_map_covers_every_public_package() -> None:
    packages = _openapi_packages()
    assert packages, "gen/openapi holds the public packages' documents"
    readme = README.read_text()
    api_map = _section(readme, "The APIs")
    rows = [line for line in api_map.splitlines() if line.startswith("| ") and "---" not in line]
    for package in packages:
        assert any(f"`{package}`" in row and "](docs/" in row for row in rows), package
        assert f"`/openapi/{package}.json`" in api_map


def test_every_docs_page_is_in_the_index() -> None:
    index = DOCS / "README.md"
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in relative_links(index)}
    pages = {p.resolve() for p in DOCS.glob("*.md") if p != index}
    assert sorted(p.name for p in pages - linked) == []


def test_the_readme_links_the_architecture_and_the_index() -> None:
    links = relative_links(README)
    assert "docs/ARCHITECTURE.md" in links
    assert "docs/README.md" in links


def test_the_readme_lists_every_default_port() -> None:
    """The README's table of where things listen keeps up with the topology's defaults."""
    section = _section(README.read_text(), "Where a running platform listens")
    missing = {
        setting: port
        for setting, port in topology.default_ports().items()
        if f"`{port}`" not in section and f":{port}`" not in section
    }
    assert missing == {}, "README.md, 'Where a running platform listens', lacks these defaults"
