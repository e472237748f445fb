"""The README and docs/ pages: links resolve, named repository paths exist, README stays short."""

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# Top-level folders whose files the docs name in code spans (`benchmarks/quant_speed.py`).
REPO_DIRS = ("benchmarks/", "configs/", "docs/", "scripts/", "src/", "tests/")


def prose_lines(text: str) -> list[str]:
    """The lines of a markdown page outside fenced code blocks."""
    lines, fence = [], ""
    for line in text.splitlines():
        marker = re.match(r"^\s*(`{3,}|~{3,})", line)
        if marker and (not fence or marker.group(1).startswith(fence)):
            fence = "" if fence else marker.group(1)
            continue
        if not fence:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """Targets of the inline, image and reference links of a page, code excluded."""
    targets = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        ref = REFERENCE_LINK.match(line)
        if ref:
            targets.append(ref.group(1))
            continue
        targets += INLINE_LINK.findall(CODE_SPAN.sub("", line))
    return targets


def broken_links(page: Path) -> list[str]:
    """Relative links of a page whose file, or whose heading anchor, does not exist."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: ...
        path, _, anchor = unquote(target).partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    return broken


def missing_paths(page: Path) -> list[str]:
    """Repository paths named alone in a code span (`scripts/x.py`) that do not exist."""
    missing = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        for span in CODE_SPAN.finditer(line):
            text = span.group(2).strip()
            if " " in text or not text.startswith(REPO_DIRS):
                continue
            path = text.split("::")[0].rstrip(".,;:")
            if not (ROOT / path).exists():
                missing.append(text)
    return missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link points to an existing file, and every anchor to a heading there."""
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_repository_paths_exist(page: Path) -> None:
    """A path such as `benchmarks/results/quant/README.md` named in the prose exists."""
    assert missing_paths(page) == []


def test_readme_is_a_front_page() -> None:
    """The README stays a short front page; reference material lives in docs/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_checker_catches_broken_links(tmp_path: Path) -> None:
    """The checker reports a missing file, a missing anchor and ignores code and URLs."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading (x)\n\n## Twice\n"
                                       "## Twice\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-code-heading-x) [ok](other.md#twice-1) [ok](#local) "
        "[web](https://example.org/x)\n\n## Local\n\n"
        "[gone](missing.md) [bad](other.md#nowhere) `[code](missing.md)`\n\n"
        "```\n[fenced](missing.md)\n```\n\n[ref]: other.md#twice-2\n",
        encoding="utf-8")
    assert [b.split(" ")[0] for b in broken_links(page)] == [
        "missing.md", "other.md#nowhere", "other.md#twice-2"]
