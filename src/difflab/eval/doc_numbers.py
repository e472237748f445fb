"""Numbers quoted in the prose of the docs, traced to the result files the same paragraph or page
cites (benchmarks/results/**.json, .jsonl), allowing the rounding the text shows."""

from __future__ import annotations

import ast
import functools
import json
import math
import re
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[3]  # the repository (src/difflab/eval -> root)
RESULTS = "benchmarks/results"
ALLOWLIST = "benchmarks/doc_numbers_allowlist.txt"
PROVENANCE_EXCEPTIONS = "benchmarks/provenance_exceptions.txt"
PROVENANCE_KEYS = ("command", "code_version", "split", "checkpoint", "checkpoint_sha256",
                   "config", "machine", "date")  # what difflab.eval.provenance.provenance writes

# --- what is not prose -------------------------------------------------------------------------
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
TABLE_OPEN = re.compile(r"<!-- table:([\w-]+) -->")
TABLE_CLOSE = re.compile(r"<!-- /table:([\w-]+) -->")
COMMENT = re.compile(r"<!--.*?-->")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)]*)\)")
REFERENCE_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*\S+")
URL = re.compile(r"<?https?://\S+>?")
HEADING_NUMBER = re.compile(r"^(#{1,6}\s+)(?:\d+(?:\.\d+)*\.?\s+)?")
LIST_NUMBER = re.compile(r"^(\s*)\d+[.)]\s")
ENUMERATION = re.compile(r"\((?:\d{1,2}|[ivx]{1,4}|[a-h])\)")
FOOTNOTE = re.compile(r"\[\d{1,2}\]")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?\b|\b\d{1,2}:\d{2}(?::\d{2})?"
                  r"(?:\s?UTC)?\b")
MONTH_DATE = re.compile(r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
                        r"\s+(?:\d{1,2},?\s+)?\d{4}\b")
VERSION = re.compile(r"\bv\d+(?:\.\d+)*\b|\b\d+\.\d+\.\d+[\w.+-]*|\b(?:Python|PyTorch|torch|CUDA|"
                     r"diffusers|transformers|peft|numpy|NumPy|FastAPI|fastapi|uvicorn|Chromium|"
                     r"safetensors|ruff|pytest|version|Ubuntu|sklearn|scikit-learn|cuDNN|OpenMP|"
                     r"format|SM|sm_|compute capability)\s*\d+(?:\.\d+)*\+?")
PATH = re.compile(r"[\w.~-]*/[\w./*~-]+|\b[\w.*-]+\.(?:json|jsonl|md|py|toml|png|html|txt|log|"
                  r"safetensors|pt|pth|yaml|yml|csv|sh|cfg|ini|gz|zip)\b")
FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*(?:[ =](?!-)[^\s,;)]+)?")
DIMENSIONS = re.compile(r"\b\d+(?:\s?[×x…]\s?\d+)+\b(?!\s?(?:faster|slower|speed))")
# numbers that are part of a method's or format's name: DPM-Solver++ 2M, FLUX.1, SD 1.5, GPT-2
NAMES = re.compile(r"DPM(?:-Solver)?\+\+\s?(?:\(?\d[MS]\)?|2M SDE)|\b(?:FLUX|SD|SDXL|GPT|PixArt|"
                   r"PixArt-[αΣ]|Stable Diffusion|Llama|CLIP|T5|MiniLM|Lumina|ViT|ResNet|VGG|"
                   r"Inception)[\s.-]?v?\d+(?:\.\d+)?\b|\b\d+(?:st|nd|rd|th)\b|\bO\(\S+\)|"
                   r"\b(?:Sec|Section|Fig|Figure|Table|Eq|Algorithm|Appendix|App)\.?\s?\(?\d+"
                   r"(?:\.\d+)*\)?")  # a paper's parts: "LDM, Sec. 4.1", "Algorithm 2"
# an accuracy and its 95% Wilson interval, "86.9% [78.1, 92.5]" (difflab.eval.stats)
WILSON = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?%\s?\[(\d+(?:\.\d+)?),\s?(\d+(?:\.\d+)?)\]")
MINUTES_SECONDS = re.compile(r"(?<![\w.])(\d+)\s?min\s(\d+)\s?s\b")
HOURS_MINUTES = re.compile(r"(?<![\w.])(\d+)\s?h\s(\d+)\s?min\b")

# --- numbers -----------------------------------------------------------------------------------
NUMBER = re.compile(
    r"(?<![\w.,/\\#^])(?<!\D-)(?P<sign>(?<![\w)\]])[+\-−±~≈]?)"  # "12-35": both numbers
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?(?:[eE](?P<exp>[+\-−]?\d+))?"
    r"(?![\w]*[/.]\w)(?=(?P<tail>[^\n]{0,24}))")
UNITS = (  # (unit, regex on the text right after the number)
    ("%", r"\s?%"),
    ("points", r"\s?(?:percentage\s)?(?:points?|pts?|pp)\b"),
    ("x", r"\s?[x×](?![\w\d])"),
    ("dB", r"\s?dB\b"),
    ("ms", r"\s?(?:ms|milliseconds?)\b"),
    ("s", r"\s?(?:s|sec|secs|seconds?)\b(?!/)"),
    ("min", r"\s?(?:min|mins|minutes?)\b"),
    ("h", r"\s?(?:h|hours?)\b"),
    ("GFLOP", r"\s?(?:GFLOPs?|GFLOP/s|GFLOPS)"),
    ("TFLOP", r"\s?(?:TFLOPs?|TFLOP/s|TFLOPS)"),
    ("MFLOP", r"\s?(?:MFLOPs?|MFLOP/s)"),
    ("GB", r"\s?(?:GB|GiB)\b"),
    ("MB", r"\s?(?:MB|MiB)\b"),
    ("KB", r"\s?(?:KB|KiB|kB)\b"),
    ("M", r"\s?M\b(?!B)"),
    ("k", r"\s?[kK]\b"),
    ("B", r"\s?(?:bytes?)\b"),
)
UNIT_RE = [(name, re.compile(pattern)) for name, pattern in UNITS]
RESULT_UNITS = {"%", "points", "x", "dB", "ms", "s", "min", "h", "GFLOP", "TFLOP", "MFLOP",
                "GB", "MB", "KB", "M", "k"}
# (unit -> factors): a quoted value v can be stored as v * factor (91.7% as 0.917, 10 min as 600 s)
SCALES: dict[str, tuple[float, ...]] = {
    "%": (1.0, 0.01), "points": (1.0, 0.01), "ms": (1.0, 1e-3), "s": (1.0, 1e3),
    "min": (1.0, 60.0), "h": (1.0, 3600.0, 60.0), "GFLOP": (1.0, 1e9),
    "TFLOP": (1.0, 1e12), "MFLOP": (1.0, 1e6), "GB": (1.0, 1e9, 2.0**30, 1e3),
    "MB": (1.0, 1e6, 2.0**20), "KB": (1.0, 1e3, 2.0**10), "M": (1.0, 1e6), "k": (1e3,),
}
# words after a number that make it a setting of the machine or the set-up, not a result
NON_RESULT_WORDS = re.compile(r"\s?-?(?:cores?|threads?|CPUs?|GPUs?|processes|process|bits?|"
                              r"bytes? per|px|pixels?|channels?|d\b|D\b|dims?|dimensional|"
                              r"-dimensional|character|chars?|lines?|columns?|tokens?)\b")
# words before a number that make it a setting: "seeds from 6000", "family 23", "batch 64"
SETTING_BEFORE = re.compile(r"(?:\bseeds?(?: from)?|\bfamily|\bmodel|\bbatch|\brank|\bdim|\bdepth|"
                            r"\bpatch|\blr|\bmax|\bexit (?:status|code)|\b[a-zA-Z]\s?=)\s*$")
# HTTP status codes: "gets 429", "503 once shutting down", "401 (missing key)"
HTTP_CODES = {200, 201, 204, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 500, 502, 503,
              504}
HTTP_BEFORE = re.compile(r"(?:\bgets?|\bturns|\banswers?:?|\breturns?|\bwith|HTTP|\bstatus|"
                         r"\bcode|,|\(|:)\s*$")
HTTP_AFTER = re.compile(r"\s*(?:\(|\)|,|\.|;|$|with\b|once\b|from\b|and is\b)")
SMALL_INT = 10  # bare integers up to this with no unit count things (steps, seeds, blocks, ...)


@dataclass(frozen=True)
class Quote:
    """One number quoted in a page's prose."""

    page: str
    line: int
    text: str          # as written, with its unit ("91.7%", "-2.4 points", "34 min 33 s")
    value: float       # the number alone, signed
    decimals: int      # digits after the point as written: the rounding the text shows
    unit: str          # a key of SCALES, "x", "dB", "" ...
    signed: bool       # written with an explicit + or - (a difference)
    context: str
    paragraph_files: tuple[str, ...]
    page_files: tuple[str, ...]
    interval_of: str = ""  # a Wilson bound: the accuracy it belongs to, "86.9%"

    @property
    def number(self) -> str:
        """The number as the allowlist names it: digits as written, no sign, no unit."""
        return _NUMBER_TEXT.match(self.text).group(0).lstrip("+-−±~≈").replace(",", "")


_NUMBER_TEXT = re.compile(r"[+\-−±~≈]?[\d,]+(?:\.\d+)?(?:[eE][+\-−]?\d+)?")


@dataclass
class Verdict:
    """Where a quote was found: traced (a cited file), weak (another result file), untraced,
    or allowed (untraced or weakly traced, and on the allowlist)."""

    quote: Quote
    status: str
    file: str = ""
    how: str = ""


@dataclass
class FileNumbers:
    """The numbers a result file holds, sorted, and per leaf key (for differences)."""

    path: str
    values: np.ndarray
    by_key: dict[str, np.ndarray] = field(default_factory=dict)
    has_provenance: bool = False


# --- pages -------------------------------------------------------------------------------------
def doc_pages(root: Path = ROOT) -> list[str]:
    """README.md and docs/*.md, relative to the repository."""
    return ["README.md", *(p.relative_to(root).as_posix()
                           for p in sorted((root / "docs").glob("*.md")))]


def _strip(line: str) -> str:
    """The prose of one line: code, links, URLs, paths, flags, dates and versions blanked."""
    line = COMMENT.sub(" ", line)
    line = CODE_SPAN.sub(" ", line)
    line = LINK.sub(" ", line)
    line = URL.sub(" ", line)
    line = HEADING_NUMBER.sub(r"\1", line)
    line = LIST_NUMBER.sub(r"\1", line)
    for pattern in (ENUMERATION, FOOTNOTE, MONTH_DATE, DATE, VERSION, PATH, FLAG, DIMENSIONS,
                    NAMES):
        line = pattern.sub(" ", line)
    return line


def _unit(tail: str) -> tuple[str, int]:
    for name, pattern in UNIT_RE:
        m = pattern.match(tail)
        if m:
            return name, m.end()
    return "", 0


def _is_year(value: float, decimals: int, unit: str, before: str, after: str) -> bool:
    """A year of a citation or an event: "Wilson 1927", "(Ho et al., 2020)", "in 2023"."""
    if decimals or unit or not 1900 <= value <= 2039 or value != int(value):
        return False
    return bool(re.search(r"(?:[A-Z][\w'’-]*|al\.|[,\"”(]|\bin|since|by|of)\s*$", before)
                or re.match(r"\s*(?:[),;:]|$|\.\s)", after))


def _numbers(prose: str) -> Iterator[tuple[str, float, int, str, bool, str]]:
    """(text, value, decimals, unit, signed, interval_of) for each number in a stripped line."""
    for m in MINUTES_SECONDS.finditer(prose):
        yield m.group(0), int(m.group(1)) * 60 + int(m.group(2)), 0, "s", False, ""
    for m in HOURS_MINUTES.finditer(prose):
        yield m.group(0), int(m.group(1)) * 60 + int(m.group(2)), 0, "min", False, ""
    prose = HOURS_MINUTES.sub(" ", MINUTES_SECONDS.sub(" ", prose))
    bounds = {}  # start of a Wilson bound -> the accuracy it belongs to ("86.9%")
    for m in WILSON.finditer(prose):
        bounds[m.start(2)] = bounds[m.start(3)] = m.group(1) + "%"
    matches = list(NUMBER.finditer(prose))
    for i, m in enumerate(matches):
        sign = m.group("sign").replace("−", "-")
        digits = m.group("int").replace(",", "")
        frac = m.group("frac") or ""
        exp = (m.group("exp") or "").replace("−", "-")
        value = float(digits + frac + (f"e{exp}" if exp else ""))
        decimals = max(len(frac) - 1, 0) - (int(exp) if exp else 0)
        tail = m.group("tail")
        unit, end = _unit(tail)
        if not unit and i + 1 < len(matches) and re.match(r"\s?[–-]\s?$|\s?(?:to|→|and)\s$",
                                                          prose[m.end("frac") if frac else
                                                                m.end("int"):
                                                                matches[i + 1].start()]):
            unit = _unit(matches[i + 1].group("tail"))[0]  # "12-35 min", "20.7 → 38.8 dB"
        if unit == "x" and re.match(r"\s?[x×]\s?\d", tail):
            continue  # a size, 16x16
        before = prose[:m.start()]
        if _is_year(value, decimals, unit, before, tail):
            continue
        if not unit and SETTING_BEFORE.search(before):
            continue
        if value in HTTP_CODES and not frac and (HTTP_BEFORE.search(before)
                                                 or HTTP_AFTER.match(tail)):
            continue
        if not unit and (NON_RESULT_WORDS.match(tail)
                         or (not frac and not exp and value <= SMALL_INT)):
            continue
        signed = sign in ("+", "-") and not before.rstrip().endswith(("=",))
        if sign == "-":
            value = -value
        text = (sign if signed else "") + m.group("int") + frac + (
            f"e{m.group('exp')}" if exp else "") + tail[:end]
        yield text.strip(), value, max(decimals, 0), unit, signed, bounds.get(m.start("int"), "")


def _citations(text: str) -> set[str]:
    """Result-file paths a stretch of markdown names (code spans, links, bare paths)."""
    found = set()
    for m in re.finditer(r"benchmarks/results/[\w./*-]*", text):
        found.add(m.group(0).rstrip(".,;:)"))
    return found


def _files_of(citation: str, root: Path) -> set[str]:
    """The .json / .jsonl files one citation names: a file, a folder, a glob, or any other file
    of a result folder (its README, table, plot: the folder)."""
    path = root / citation
    if not re.match(rf"{RESULTS}/[\w.-]+", citation):
        return set()  # the results folder as a whole (benchmarks/results/**.json): no citation
    if "*" in citation:
        matches = {p for p in root.glob(citation)}
        return {p.relative_to(root).as_posix() for p in matches if p.suffix in (".json", ".jsonl")}
    if path.is_file() and path.suffix in (".json", ".jsonl"):
        return {citation}
    if not path.exists():
        return set()  # a fragment (an f-string's head in tables.py) or a missing file
    folder = path if path.is_dir() else path.parent
    return {p.relative_to(root).as_posix() for p in folder.rglob("*")
            if p.suffix in (".json", ".jsonl")}


# where the generated tables come from (difflab.eval.tables), read as source: importing it would
# import scipy, which costs more than the whole check
TABLE_MODULES = ("tables.py", "reference_tables.py")
TABLE_MARKER = re.compile(  # tables.MARKER
    r"<!-- table:(?P<name>[\w-]+) -->(?:\n(?P<body>.*?))?<!-- /table:(?P=name) -->",
    re.DOTALL)


@functools.cache
def _table_sources() -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
    """(table name -> source of its TABLES entry, module-level name -> its source, PAGES)."""
    entries: dict[str, str] = {}
    definitions: dict[str, str] = {}
    pages: tuple[str, ...] = ()
    for module in TABLE_MODULES:
        text = (Path(__file__).parent / module).read_text(encoding="utf-8")
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                continue
            for name in names:
                definitions[name] = ast.get_source_segment(text, node) or ""
            if "TABLES" in names and isinstance(node.value, ast.Dict):
                for key, value in zip(node.value.keys, node.value.values, strict=True):
                    entries[ast.literal_eval(key)] = ast.get_source_segment(text, value) or ""
            if "PAGES" in names:
                pages = tuple(ast.literal_eval(node.value))
    return entries, definitions, pages


@functools.cache
def table_files(name: str) -> tuple[str, ...]:
    """The result files a generated table reads: the paths in its entry of tables.TABLES and in
    the functions and constants that entry names, read from their source."""
    entries, definitions, _ = _table_sources()
    sources, seen = [entries[name]], set()
    for source in sources:
        for ident in set(re.findall(r"\b[A-Za-z_]\w*\b", source)) - seen:
            seen.add(ident)
            if ident in definitions:
                sources.append(definitions[ident])
    return tuple(sorted(c for s in sources for c in _citations(s)))


@dataclass
class Page:
    """A page's prose lines (number, text), paragraphs, and the result files it cites."""

    path: str
    lines: list[tuple[int, str, int]]  # (line number, stripped prose, paragraph index)
    raw: dict[int, str]
    paragraph_files: list[set[str]]
    files: set[str]


def read_page(page: str, root: Path = ROOT) -> Page:
    """The prose of a page outside code blocks and generated tables, with its citations."""
    text = (root / page).read_text(encoding="utf-8")
    lines, raw, paragraphs, page_files = [], {}, [set()], set()
    fence, table = "", ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("|") and not fence and not table and paragraphs[-1]:
            paragraphs.append(set())  # each row of a hand-written table is its own paragraph
        for c in _citations(line):
            files = _files_of(c, root)
            paragraphs[-1] |= files
            page_files |= files
        marker = FENCE.match(line)
        if marker and (not fence or marker.group(1).startswith(fence)):
            fence = "" if fence else marker.group(1)
            continue
        opened = TABLE_OPEN.search(line)
        if opened and not fence:
            table = opened.group(1)
            if table in _table_sources()[0]:
                files = {f for c in table_files(table) for f in _files_of(c, root)}
                paragraphs[-1] |= files
                page_files |= files
        if TABLE_CLOSE.search(line) and not fence:
            table = ""
            continue
        if fence or table or REFERENCE_DEF.match(line):
            continue
        if not line.strip():
            paragraphs.append(set())
            continue
        lines.append((number, _strip(line), len(paragraphs) - 1))
        raw[number] = line
    return Page(page, lines, raw, paragraphs, page_files)


def quotes(page: str, root: Path = ROOT) -> list[Quote]:
    """Every number quoted in the prose of `page`."""
    p = read_page(page, root)
    page_files = tuple(sorted(p.files))
    found = []
    for number, prose, paragraph in p.lines:
        cited = tuple(sorted(p.paragraph_files[paragraph]))
        for text, value, decimals, unit, signed, interval_of in _numbers(prose):
            found.append(Quote(page, number, text, value, decimals, unit, signed,
                               p.raw[number].strip(), cited, page_files, interval_of))
    return found


# --- result files ------------------------------------------------------------------------------
_IN_STRING = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])")


# keys whose numbers are never results: positions, seeds, dates, hashes, machine load
META_KEYS = re.compile(r"^(?:index|idx|seeds?|seed_offset|date|cpu_id|code_version|pid|"
                       r"checkpoint_sha256|sha256|load_average\w*)(?:#text)?$")
MAX_ARRAY = 16  # a longer list of plain numbers is per-image or per-step data: only its length


def _leaves(data: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """(leaf key, number) for every number in a JSON value, numbers in strings and the lengths
    of lists (a count of evaluations, images, ...) included; not the elements of long numeric
    arrays (per-image verdicts, curves) nor the values of META_KEYS."""
    if META_KEYS.match(key):
        return
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, str(k))
    elif isinstance(data, list):
        yield key + "#len", float(len(data))
        if len(data) > MAX_ARRAY and all(isinstance(v, int | float) for v in data):
            return
        for v in data:
            yield from _leaves(v, key)
    elif isinstance(data, bool) or data is None:
        return
    elif isinstance(data, int | float):
        if math.isfinite(data):
            yield key, float(data)
    elif isinstance(data, str) and len(data) < 2000:
        for m in _IN_STRING.finditer(data):
            yield key + "#text", float(m.group(0))


def _records(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(text)]


def has_provenance(records: Sequence[Any]) -> bool:
    """Whether a result file carries what difflab.eval.provenance.provenance writes: as a
    "provenance" block, or its keys at the top level of a record."""
    def complete(d: Any) -> bool:
        return isinstance(d, dict) and all(k in d for k in PROVENANCE_KEYS)

    return any(isinstance(r, dict) and (complete(r.get("provenance")) or complete(r))
               for r in records)


@functools.cache
def table_numbers(root: Path = ROOT) -> dict[str, dict[str, list[float]]]:
    """result file -> {table name: the numbers its committed generated tables show}: what
    difflab.eval.tables computes from the file (speed-ups from the timing rounds, Wilson
    intervals), which tests/test_tables.py keeps equal to the file."""
    entries, _, pages = _table_sources()
    out: dict[str, dict[str, list[float]]] = {}
    for page in pages:
        if not (root / page).is_file():
            continue
        for m in TABLE_MARKER.finditer((root / page).read_text(encoding="utf-8")):
            if m.group("name") not in entries:
                continue
            body = re.sub(r"(\d)[x×](?!\w)", r"\1 ", m.group("body") or "")  # 1.51x -> 1.51
            numbers = [float(x.group(0)) for x in _IN_STRING.finditer(body)]
            for c in table_files(m.group("name")):
                for path in _files_of(c, root):
                    out.setdefault(path, {}).setdefault(m.group("name"), []).extend(numbers)
    return out


@functools.cache
def result_file(path: str, root: Path = ROOT) -> FileNumbers:
    """The numbers of one result file, with those its generated tables show."""
    records = _records(root / path)
    keyed: dict[str, list[float]] = {}
    for record in records:
        for key, value in _leaves(record):
            keyed.setdefault(key, []).append(value)
    for name, numbers in table_numbers(root).get(path, {}).items():
        keyed[f"table:{name}"] = numbers
    by_key = {k: np.unique(np.asarray(v)) for k, v in keyed.items()}
    values = np.unique(np.concatenate(list(by_key.values()))) if by_key else np.zeros(0)
    return FileNumbers(path, values, by_key, has_provenance(records))


@functools.cache
def result_paths(root: Path = ROOT) -> tuple[str, ...]:
    """Every .json / .jsonl file under benchmarks/results."""
    return tuple(sorted(p.relative_to(root).as_posix() for p in (root / RESULTS).rglob("*")
                        if p.suffix in (".json", ".jsonl")))


@functools.cache
def _all_values(root: Path = ROOT) -> tuple[np.ndarray, np.ndarray]:
    """Every result file's numbers in one sorted array, with the index of their file."""
    paths = result_paths(root)
    values = [result_file(p, root).values for p in paths]
    owner = np.concatenate([np.full(len(v), i) for i, v in enumerate(values)])
    flat = np.concatenate(values)
    order = np.argsort(flat, kind="stable")
    return flat[order], owner[order]


# --- matching ----------------------------------------------------------------------------------
MAX_DIFFERENCE_KEY = 500  # a leaf key with more distinct values than this is per-image data


def _targets(q: Quote) -> list[tuple[float, float, str]]:
    """(value, tolerance, how) a file may store the quote as."""
    tol = 0.5 * 10.0 ** -q.decimals * (1 + 1e-9) + 1e-12
    out = []
    values = [q.value, abs(q.value)] if q.signed else [q.value]
    for v in values:
        for factor in SCALES.get(q.unit, (1.0,)):
            how = "" if factor == 1.0 else f" (as {v * factor:g})"
            out.append((v * factor, tol * factor, how))
    return out


def _in(values: np.ndarray, target: float, tol: float) -> float | None:
    i = int(np.searchsorted(values, target - tol))
    if i < len(values) and values[i] <= target + tol:
        return float(values[i])
    return None


# which keys a difference may be taken within, by the quote's unit (tables: any)
DIFFERENCE_KEYS = {"dB": re.compile(r"psnr|db|^table:", re.I),
                   "points": re.compile(r"acc|pass|rate|score|^table:", re.I),
                   "%": re.compile(r"acc|pass|rate|score|^table:", re.I)}
NOT_DIFFERENCE_KEYS = re.compile(r"seed|latenc|second|time|bytes|flops|step|#len|#text", re.I)


def _difference(numbers: FileNumbers, target: float, tol: float, unit: str = "") -> str:
    """A key whose two values differ by `target` (within `tol`), as "key: a - b", or ""; keys
    of the quantity the unit names only (PSNR for dB, accuracies for points), never timings,
    seeds or counts."""
    allowed = DIFFERENCE_KEYS.get(unit)
    for key, a in numbers.by_key.items():
        if len(a) < 2 or len(a) > MAX_DIFFERENCE_KEY or NOT_DIFFERENCE_KEYS.search(key):
            continue
        if allowed is not None and not allowed.search(key):
            continue
        low = np.searchsorted(a, a - target - tol)
        ok = (low < len(a)) & (a[np.minimum(low, len(a) - 1)] <= a - target + tol)
        if ok.any():
            i = int(np.argmax(ok))
            return f"{key}: {a[i]:g} - {a[low[i]]:g}"
    return ""


def match_file(q: Quote, numbers: FileNumbers, differences: bool = True) -> str:
    """How the quote appears in one result file ("" when it does not); with `differences`
    False, only as a value or, for a speed-up, the inverse of one."""
    for target, tol, how in _targets(q):
        found = _in(numbers.values, target, tol)
        if found is not None:
            return f"{found:g}{how}"
    if q.unit == "x" and q.value > 0:  # a speed-up quoted as the inverse of a time ratio
        low, high = 1 / (q.value + 0.5 * 10.0 ** -q.decimals), 1 / max(
            q.value - 0.5 * 10.0 ** -q.decimals, 1e-12)
        found = _in(numbers.values, (low + high) / 2, (high - low) / 2)
        if found is not None:
            return f"1 / {found:g}"
    if differences and (q.signed or q.unit == "points"):
        for target, tol, how in _targets(q):
            if target > 0:
                diff = _difference(numbers, target, tol, q.unit)
                if diff:
                    return f"difference {diff}{how}"
    return ""


def match_anywhere(q: Quote, root: Path = ROOT) -> tuple[str, str]:
    """(file, how) of the first result file holding the quote's value, or ("", "")."""
    flat, owner = _all_values(root)
    paths = result_paths(root)
    for target, tol, how in _targets(q):
        i = int(np.searchsorted(flat, target - tol))
        if i < len(flat) and flat[i] <= target + tol:
            return paths[owner[i]], f"{flat[i]:g}{how}"
    return "", ""


MAX_WILSON_N = 20000


def wilson_consistent(accuracy: str, bound: float, decimals: int) -> bool:
    """Whether `bound` (percent, as rounded) is a bound of the 95% Wilson interval of
    `accuracy` ("86.9%") for some count of images n <= MAX_WILSON_N."""
    z = statistics.NormalDist().inv_cdf(0.975)  # stats.Z95
    p = float(accuracy.rstrip("%")) / 100
    p_decimals = len(accuracy.rstrip("%").partition(".")[2]) + 2
    n = np.arange(1, MAX_WILSON_N + 1, dtype=float)
    k = np.round(p * n)
    n, k = n[np.abs(k / n - p) <= 0.5 * 10.0 ** -p_decimals + 1e-12], k[
        np.abs(k / n - p) <= 0.5 * 10.0 ** -p_decimals + 1e-12]
    z2 = z * z
    phat = k / n
    denom = 1 + z2 / n
    centre = (phat + z2 / (2 * n)) / denom
    half = z / denom * np.sqrt(phat * (1 - phat) / n + z2 / (4 * n * n))
    lo = np.where(k == 0, 0.0, np.maximum(0.0, centre - half))
    hi = np.where(k == n, 1.0, np.minimum(1.0, centre + half))
    tol = 0.5 * 10.0 ** -decimals + 1e-9
    return bool(np.any(np.abs(100 * lo - bound) <= tol) or np.any(np.abs(100 * hi - bound) <= tol))


def trace(q: Quote, root: Path = ROOT) -> Verdict:
    """Traced when a cited result file holds the number, weak when only another one does; a
    Wilson bound shares its accuracy's verdict when it is that accuracy's interval."""
    if q.interval_of:
        accuracy = trace(Quote(q.page, q.line, q.interval_of, float(q.interval_of[:-1]),
                               len(q.interval_of[:-1].partition(".")[2]), "%", False,
                               q.context, q.paragraph_files, q.page_files), root)
        if wilson_consistent(q.interval_of, q.value, q.decimals):
            return Verdict(q, accuracy.status, accuracy.file,
                           f"Wilson interval of {q.interval_of} ({accuracy.how})")
        return Verdict(q, "untraced", how=f"not a Wilson bound of {q.interval_of}")
    for differences in (False, True):  # a value anywhere cited before a difference
        for files in (q.paragraph_files, q.page_files):
            for path in files:
                how = match_file(q, result_file(path, root), differences)
                if how:
                    return Verdict(q, "traced", path, how)
    path, how = match_anywhere(q, root)
    if not path and q.unit == "x":
        for other in result_paths(root):
            how = match_file(q, result_file(other, root))
            if how:
                path = other
                break
    return Verdict(q, "weak", path, how) if path else Verdict(q, "untraced")


# --- allowlist ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Allowed:
    """One allowlist entry: a number on a page that is not a result, and why."""

    page: str
    number: str
    reason: str
    line: int


def read_allowlist(path: Path | None = None) -> list[Allowed]:
    """`page | number | reason` lines; blank lines and # comments skipped."""
    from difflab.config import ConfigError

    path = path or ROOT / ALLOWLIST
    entries = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"{path.name}:{i}: expected 'page | number | reason', got {line!r}")
        entries.append(Allowed(parts[0], parts[1], parts[2], i))
    return entries


@dataclass
class Report:
    """The verdict on every quote of some pages, and the allowlist entries nothing needs."""

    verdicts: list[Verdict]
    unused: list[Allowed]

    def with_status(self, status: str) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == status]


def check(pages: Iterable[str] | None = None, allowlist: Sequence[Allowed] | None = None,
          root: Path = ROOT) -> Report:
    """Trace every prose number of `pages` (default: README.md and docs/*.md)."""
    pages = list(pages) if pages is not None else doc_pages(root)
    allowlist = list(allowlist) if allowlist is not None else read_allowlist(
        root / ALLOWLIST if (root / ALLOWLIST).exists() else None)
    allowed = {(a.page, a.number): a for a in allowlist}
    used: set[tuple[str, str]] = set()
    verdicts = []
    for page in pages:
        for q in quotes(page, root):
            v = trace(q, root)
            # a weak trace (a value in some uncited file) is no reason to drop an entry
            if v.status in ("untraced", "weak") and (page, q.number) in allowed:
                v = Verdict(q, "allowed", how=allowed[page, q.number].reason)
                used.add((page, q.number))
            verdicts.append(v)
    unused = [a for a in allowlist if a.page in pages and (a.page, a.number) not in used]
    return Report(verdicts, unused)


def cited_without_provenance(pages: Iterable[str] | None = None,
                             root: Path = ROOT) -> dict[str, list[str]]:
    """Result files the pages cite that lack a provenance block: file -> pages citing it."""
    out: dict[str, list[str]] = {}
    for page in (list(pages) if pages is not None else doc_pages(root)):
        for path in sorted(read_page(page, root).files):
            if not result_file(path, root).has_provenance:
                out.setdefault(path, []).append(page)
    return dict(sorted(out.items()))


def read_provenance_exceptions(path: Path | None = None) -> dict[str, str]:
    """`file | reason` lines of the cited result files written without provenance that cannot
    be made again here; blank lines and # comments skipped."""
    from difflab.config import ConfigError

    path = path or ROOT / PROVENANCE_EXCEPTIONS
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 1)]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{path.name}:{i}: expected 'file | reason', got {line!r}")
        out[parts[0]] = parts[1]
    return out


def provenance_problems(pages: Iterable[str] | None = None,
                        root: Path = ROOT) -> tuple[dict[str, list[str]], list[str]]:
    """(cited files lacking provenance and not excepted -> citing pages, exceptions that no
    longer apply: the file is no longer cited or now carries provenance)."""
    pages = list(pages) if pages is not None else doc_pages(root)
    lacking = cited_without_provenance(pages, root)
    excepted = read_provenance_exceptions(root / PROVENANCE_EXCEPTIONS)
    missing = {f: p for f, p in lacking.items() if f not in excepted}
    stale = [f for f in excepted if f not in lacking]
    return missing, stale


def near_values(q: Quote, root: Path = ROOT, limit: int = 3) -> list[tuple[str, float, str]]:
    """(file, value, key) of the result values nearest the quote (relative), one per file."""
    best: list[tuple[float, str, float, str]] = []
    for path in result_paths(root):
        numbers = result_file(path, root)
        top = None
        for key, arr in numbers.by_key.items():
            for target, _tol, _how in _targets(q):
                if not len(arr) or target == 0:
                    continue
                i = int(np.clip(np.searchsorted(arr, target), 1, len(arr) - 1)) if len(arr) > 1 \
                    else 0
                for j in {max(i - 1, 0), i}:
                    err = abs(arr[j] - target) / abs(target)
                    if top is None or err < top[0]:
                        top = (err, path, float(arr[j]), key)
        if top is not None and top[0] < 0.1:
            best.append(top)
    return [(p, v, k) for _e, p, v, k in sorted(best)[:limit]]
