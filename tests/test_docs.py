"""Checks that keep the docs true: every table of numbers that names a results file equals that file, every
`bin/...` command line in README.md and docs/ parses, and every flag a tool's --help lists is documented.
Each check also runs once on a planted error, to show that it can fail."""

import json
import re
import runpy
import shlex
from pathlib import Path

import pytest
from absl import flags

import chunkygan_jax.cli  # noqa: F401  (the flags every tool shares: --help, --compilation_cache)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
TOOLS = sorted(p.name for p in (ROOT / "bin").iterdir() if p.is_file() and not p.name.startswith("."))
RESULTS = re.compile(r"bench/results/[\w*.-]+\.json")
DERIVED = re.compile(r"<!--\s*derived columns:\s*(.*?)\s*-->")  # columns computed from the file's values
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
NUMERIC_CELL = re.compile(r"[-+]?\d+(?:\.\d+)?(?:\s*(?:±\s*[-+]?\d+(?:\.\d+)?|\(\s*[-+]?\d+(?:\.\d+)?\s*\)))?")


# ------------------------------------------------------------------------------------------ tables
def tables(text: str):
    """Every markdown table: (line number, header cells, rows of cells, results files named in the paragraph
    just above or just below it, derived columns declared there)."""
    lines = [line.strip() for line in text.split("\n")]  # a table may be indented under a list item
    out, i = [], 0
    while i < len(lines):
        if not (lines[i].startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))):
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        above = []
        while k >= 0 and lines[k].strip() and not lines[k].startswith("|"):
            above.insert(0, lines[k])
            k -= 1
        k = j
        while k < len(lines) and not lines[k].strip():
            k += 1
        while k < len(lines) and lines[k].strip() and not lines[k].startswith(("|", "#")):
            above.append(lines[k])  # the paragraph just below counts too (a caption)
            k += 1
        above = " ".join(above)
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[i:j]]
        derived = [c.strip() for m in DERIVED.findall(above) for c in m.split(",")]
        out.append((i + 1, cells[0], cells[2:], RESULTS.findall(above), derived))
        i = j
    return out


def _numbers(cell: str):
    """The numbers of a cell that holds only numbers ("0.1146", "**20.0**", "14 (1.75)", "0.12 ± 0.03",
    "65.4 *"), each with its decimals; None for a label ("1 code", "G^S (the default)")."""
    text = cell.replace("**", "").replace("`", "").rstrip("* ").strip()
    if not NUMERIC_CELL.fullmatch(text):
        return None
    return [(float(n), len(n.split(".")[1]) if "." in n else 0) for n in NUMBER.findall(text)]


def _records(value, depth=0):
    """Every dict in a results file below its top level (the top level too when it is the only one),
    with all the numbers it holds, nested ones included."""
    found = []

    def numbers(v):
        if isinstance(v, bool):
            return []
        if isinstance(v, (int, float)):
            return [float(v)]
        if isinstance(v, dict):
            v = list(v.values())
        return [x for item in v for x in numbers(item)] if isinstance(v, list) else []

    def walk(v, depth):
        if isinstance(v, dict):
            if depth:
                found.append(numbers(v))
            for item in v.values():
                walk(item, depth + 1)
        elif isinstance(v, list):
            for item in v:
                walk(item, depth + 1)

    walk(value, 0)
    return found or [numbers(value)]


def _shown(value: float, shown: float, decimals: int) -> bool:
    return abs(value - shown) <= 0.5 * 10 ** -decimals + 1e-9


def table_problems(doc: Path, text: str, root: Path = ROOT) -> list[str]:
    """Where a table that names a results file shows a number that no single record of the file holds
    (at the precision shown). A row's numbers must all come from one record, except in derived columns."""
    problems = []
    for line, header, rows, names, derived in tables(text):
        if not names:
            continue
        files = sorted({p for name in names for p in root.glob(name)})
        if not files:
            problems.append(f"{doc.name}:{line}: names {names}, which do not exist")
            continue
        records = [r for f in files for r in _records(json.loads(f.read_text()))]
        for n, row in enumerate(rows):
            shown = [x for col, cell in zip(header, row) if col not in derived for x in (_numbers(cell) or [])]
            if shown and not any(all(any(_shown(v, x, d) for v in rec) for x, d in shown) for rec in records):
                problems.append(f"{doc.name}:{line + 2 + n}: row {row} is not in {[f.name for f in files]}")
    return problems


def test_tables_that_name_a_results_file_equal_its_values():
    checked = [t for doc in DOCS for t in tables(doc.read_text()) if t[3]]
    assert len(checked) >= 8  # the check is not vacuous
    assert [p for doc in DOCS for p in table_problems(doc, doc.read_text())] == []


def test_the_table_check_catches_a_planted_error():
    doc = ROOT / "docs" / "segmenter.md"
    text = doc.read_text()
    assert "| astronaut | G^S (the default) | 0.0953 |" in text
    planted = text.replace("| astronaut | G^S (the default) | 0.0953 |", "| astronaut | G^S (the default) | 0.1053 |")
    problems = table_problems(doc, planted)
    assert len(problems) == 1 and "0.1053" in problems[0] and "segmenter_real.json" in problems[0]


# ------------------------------------------------------------------------------------------ command lines
def command_lines(text: str) -> list[list[str]]:
    """Every `bin/...` command line: in code blocks (one per line, a trailing # comment dropped) and in
    inline code spans. Each as its words; FOO=bar prefixes dropped."""
    out = []
    blocks = [b.replace("\\\n", " ") for b in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)]
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for line in [ln for b in blocks for ln in b.split("\n")] + spans:
        line = re.sub(r"\s+#.*$", "", line.strip())
        m = re.search(r"(?:^|[\s;&|(])(bin/\w+(?:\s.*)?)$", line)
        if not m or not line.split()[0].startswith(("bin/", "$", "python3", "CUDA", "JAX", "XLA"))\
                and not re.match(r"^(\w+=\S+\s+)+bin/", line):
            continue
        try:
            words = shlex.split(m.group(1))
        except ValueError:
            words = m.group(1).split()
        if words[0][4:] in TOOLS:
            out.append([_concrete(w) for w in words if w != "..."])
    return out


def _concrete(word: str) -> str:
    """A synopsis word as a command line: `[--x=1]` -> `--x=1`, `--x=a|b` -> `--x=a`; a placeholder value
    (`--x=$i`, `--x=N`, `--x=DIR`) -> `--x=1`, which every kind of flag but an enum takes."""
    word = word.strip("[]")
    flag, eq, value = word.partition("=")
    if eq and "|" in value:
        value = value.split("|")[0]
    if eq and re.fullmatch(r"\$\w+|\$\{\w+\}|[A-Z][A-Z_]*", value):
        value = "1"
    return flag + eq + value


_LOADED: dict = {}


def _unload():
    for name, added in list(_LOADED.items()):
        for flag in added:
            if flag in flags.FLAGS:
                delattr(flags.FLAGS, flag)
        del _LOADED[name]


@pytest.fixture(autouse=True, scope="module")
def _leave_absl_flags_as_found():
    parsed = flags.FLAGS.is_parsed()
    yield
    _unload()
    if parsed:  # the shared flags keep their defaults, as parsed from an empty command line
        flags.FLAGS.mark_as_parsed()


def tool_flags(tool: str):
    """Load bin/TOOL's flags into absl's FLAGS under the module name docs_<tool> (its main() is not run);
    unloads the previous tool's first."""
    if tool in _LOADED:
        return _LOADED[tool]
    _unload()
    before = set(flags.FLAGS)
    runpy.run_path(str(ROOT / "bin" / tool), run_name=f"docs_{tool}")
    _LOADED[tool] = sorted(set(flags.FLAGS) - before)
    return _LOADED[tool]


def parse_problem(words: list[str]) -> str | None:
    """Parse one documented command line with its tool's flags (its required flags need not be given);
    the parse error, or None."""
    tool_flags(words[0][4:])
    args = [w for w in words[1:] if w not in ("--help", "-h", "--helpfull")]
    flags.FLAGS.unparse_flags()
    try:
        rest = flags.FLAGS(["bin/" + words[0][4:], *args], known_only=False)
    except flags.IllegalFlagValueError as e:
        if "must have a value other than None" in str(e):
            return None  # a line that shows some flags only (e.g. `bin/evaluate --output_dir`)
        return str(e).splitlines()[0]
    except flags.Error as e:
        return str(e).splitlines()[0]
    finally:
        flags.FLAGS.unparse_flags()
    return f"unexpected positional arguments {rest[1:]}" if len(rest) > 1 else None


def test_every_documented_command_line_parses():
    lines = [(doc.name, words) for doc in DOCS for words in command_lines(doc.read_text())]
    assert len(lines) > 40 and {w[0] for _, w in lines} == {f"bin/{t}" for t in TOOLS}
    bad = [(name, " ".join(words), parse_problem(words)) for name, words in lines]
    assert [b for b in bad if b[2]] == []


def test_the_command_line_check_catches_a_planted_error():
    planted = "Run\n\n```\nbin/invert --image=a.png --segmnts=8\nbin/edit --latents=x --strength=strong\n```\n"
    problems = [parse_problem(words) for words in command_lines(planted)]
    assert "segmnts" in problems[0] and "strength" in problems[1]


# ------------------------------------------------------------------------------------------ documented flags
def help_flags(tool: str) -> list[str]:
    """The flags bin/TOOL's --help lists (the tool's own; --helpfull adds the shared ones)."""
    tool_flags(tool)
    listing = flags.FLAGS.module_help(f"docs_{tool}")
    return sorted(set(re.findall(r"^  (?:-\w,\s*)?--(?:\[no\])?(\w+):", listing, flags=re.M)))


def undocumented(tool: str, texts: list[str]) -> list[str]:
    """The flags of bin/TOOL that no doc mentions as --FLAG (or --noFLAG) in a section that names the tool."""
    sections = [s for text in texts for s in re.split(r"\n(?=#+ )", text) if f"bin/{tool}" in s]
    return [f for f in help_flags(tool)
            if not any(re.search(rf"--(?:no)?{f}\b", s) for s in sections)]


def test_every_flag_of_every_tool_is_documented():
    texts = [doc.read_text() for doc in DOCS]
    missing = {tool: undocumented(tool, texts) for tool in TOOLS}
    assert len(help_flags("invert")) > 30
    assert {t: m for t, m in missing.items() if m} == {}


def test_the_flag_check_catches_a_planted_error():
    texts = [doc.read_text() for doc in DOCS]
    assert undocumented("invert", texts) == []
    planted = [re.sub(r"--tune_rank\b", "--tune-rank", t) for t in texts]
    assert undocumented("invert", planted) == ["tune_rank"]
