"""Only src/hpoq/config/run_mode.py reads `run.mode` (ARCHITECTURE.md, 'Run modes').

The scanner drops comments and prose strings (docstrings, messages) with `tokenize`, keeps
short identifier-like string literals such as "mode" and "run", and then looks for the
ways code reads the key: attribute access, subscripts, `.get(...)`, `getattr(...)`.
The schema definition `run: RunSection` and calls such as `subprocess.run(...)` do not match.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
ALLOWED = {SRC / "hpoq" / "config" / "run_mode.py"}

_Q = r"""["']"""
READ_PATTERNS: dict[str, re.Pattern[str]] = {
    # cfg.run.mode, cfg.run .mode, run.mode, run_section.mode, self.run_cfg.mode
    "attribute": re.compile(r"\brun\w*\s*\.\s*mode\b"),
    # cfg["run"], run["mode"], load()['run']['mode'] (a subscript, not a list literal ["run"])
    "subscript": re.compile(rf"[\w)\]]\s*\[\s*{_Q}(?:run|mode){_Q}\s*\]"),
    # cfg.get("run"), run.get('mode'), x.get("mode", None)
    "get": re.compile(rf"\.\s*get\s*\(\s*{_Q}(?:run|mode){_Q}"),
    # run.get(...) with any key, e.g. run.get(key)
    "run-get": re.compile(r"\brun\s*\.\s*get\s*\("),
    # getattr(cfg, "run"), getattr(run, "mode", None)
    "getattr": re.compile(rf"\bgetattr\s*\([^()]*?,\s*{_Q}(?:run|mode){_Q}"),
    # cfg.run (the section object itself, e.g. passed on or unpacked), but not cfg.run(...)
    "run-section": re.compile(r"\.\s*run\b(?!\s*\()"),
}

_IMPORT = re.compile(r"^\s*(?:from\s+\S+\s+)?import\s")
_IDENTIFIER_STRING = re.compile(r"""^[rbuRBU]{0,2}(["'])[A-Za-z_][A-Za-z0-9_]*\1$""")


_FSTRING_TOKENS = {
    getattr(tokenize, name)
    for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
    if hasattr(tokenize, name)
}


def code_only(source: str) -> str:
    """`source` with comments and every string that is not a bare identifier blanked out.

    Blanked characters become spaces, so line numbers and columns stay as they were.
    """
    lines = [list(line) for line in source.splitlines(keepends=True)]

    def blank(start: tuple[int, int], end: tuple[int, int]) -> None:
        for row in range(start[0], end[0] + 1):
            line = lines[row - 1]
            first = start[1] if row == start[0] else 0
            last = end[1] if row == end[0] else len(line)
            for col in range(first, min(last, len(line))):
                if line[col] != "\n":
                    line[col] = " "

    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if (
            tok.type == tokenize.COMMENT
            or tok.type in _FSTRING_TOKENS
            or (tok.type == tokenize.STRING and not _IDENTIFIER_STRING.match(tok.string))
        ):
            blank(tok.start, tok.end)
    return "".join("".join(line) for line in lines)


def find_run_mode_reads(source: str) -> list[tuple[int, str, str]]:
    """(line number, pattern name, line) for every place `source` reads the run mode."""
    hits: list[tuple[int, str, str]] = []
    for number, line in enumerate(code_only(source).splitlines(), start=1):
        if _IMPORT.match(line):
            continue  # `from hpoq.producer.commands.run import app` reads nothing
        for name, pattern in READ_PATTERNS.items():
            if pattern.search(line):
                hits.append((number, name, line.strip()))
    return hits


# --- the scanner itself ---------------------------------------------------------------------

READS = [
    "mode = config.run.mode",
    "if hpo.run.mode is RunMode.FORCE_NEW:",
    "mode = run.mode",
    "mode = run_section.mode",
    "return self.cfg.run . mode",
    'mode = config["run"]["mode"]',
    "mode = cfg['run']",
    'mode = section["mode"]',
    'mode = config.get("run", {}).get("mode")',
    "mode = cfg.get('mode', 'reuse_if_exists')",
    "mode = run.get(key)",
    'mode = getattr(config, "run", None)',
    "mode = getattr(section, 'mode')",
    "section = config.run",
    "plan(hpo.run, bench.run)",
    'mode = data["run"].get("mode") if data else None',
    'mode = load(path)["run"]["mode"]',
    "modes = [c['mode'] for c in configs]",
]

NOT_READS = [
    "run: RunSection = RunSection()",
    "run: RunSection = RunSection()  # mode null: inherit the HPO mode",
    "    mode: RunMode | None = None",
    "from hpoq.config.run_mode import get_run_mode, RunMode",
    "mode = get_run_mode(config, override=cli_mode)",
    "mode = get_benchmark_run_mode(bench, hpo)",
    "subprocess.run(['redis-server'], check=True)",
    "result = app.run ()",
    "run_id = run.info.run_id",
    "with mlflow.start_run() as active_run:",
    'data = self.model_dump(mode="json")',
    '@model_validator(mode="after")',
    "path.open(mode='w')",
    "# reads config.run.mode elsewhere",
    '"""Docstring: config.run.mode is read only in run_mode.py; cfg["run"]["mode"]."""',
    "msg = 'benchmark run.mode null inherits; see run.get(\"mode\")'",
    'msg = f"{field}: run.mode {value!r} bad"',
    'tags = {"stage": "hpo", "mode_hint": x}',
    "st_mode = os.stat(p).st_mode",
    "rerun_mode = 1",
    "from hpoq.producer.commands.run import app as run_app",
    "import hpoq.workers.run as worker_run",
    'argv = ["run"]',
    'result = runner.invoke(app, ["run", "--json"])',
]


@pytest.mark.parametrize("line", READS)
def test_scanner_catches_reads(line: str) -> None:
    assert find_run_mode_reads(line + "\n"), f"not caught: {line}"


@pytest.mark.parametrize("line", NOT_READS)
def test_scanner_ignores_non_reads(line: str) -> None:
    assert find_run_mode_reads(line + "\n") == []


def test_scanner_reports_line_numbers_in_a_module() -> None:
    source = (
        '"""Module docstring mentioning cfg.run.mode."""\n'
        "\n"
        "def plan(cfg):\n"
        '    """Also mentions run["mode"]."""\n'
        "    # cfg.run.mode in a comment\n"
        "    x = (\n"
        "        cfg.run.mode\n"
        "    )\n"
        "    return x\n"
    )
    hits = find_run_mode_reads(source)
    assert [(n, name) for n, name, _ in hits] == [(7, "attribute"), (7, "run-section")]


def test_scanner_fails_on_a_sample_violation() -> None:
    sample = "def decide(cfg):\n    return cfg['run']['mode'] == 'force_new'\n"
    with pytest.raises(AssertionError, match="reads the run mode"):
        assert_no_reads({Path("src/hpoq/producer/plan.py"): sample})


# --- the repository ---------------------------------------------------------------------------


def assert_no_reads(sources: dict[Path, str]) -> None:
    offenders = [
        f"{path}:{number}: [{name}] {line}"
        for path, source in sources.items()
        for number, name, line in find_run_mode_reads(source)
    ]
    assert not offenders, (
        "only hpoq/config/run_mode.py reads the run mode; use get_run_mode / "
        "get_benchmark_run_mode instead. Offending lines (reads the run mode):\n"
        + "\n".join(offenders)
    )


def test_the_allowed_reader_is_caught_by_the_scanner() -> None:
    """The one real reader trips the scanner, so the scan below is not vacuous."""
    (allowed,) = ALLOWED
    assert find_run_mode_reads(allowed.read_text(encoding="utf-8"))


def test_only_run_mode_py_reads_the_run_mode() -> None:
    files = sorted(p for p in SRC.rglob("*.py") if p not in ALLOWED)
    assert files, f"no Python files under {SRC}"
    assert_no_reads({p.relative_to(REPO): p.read_text(encoding="utf-8") for p in files})
