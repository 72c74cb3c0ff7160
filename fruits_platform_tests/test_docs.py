"""The README and docs/ name only what exists: files, test functions, modules and their functions, settings the
code reads, `fruits-platform` subcommands, and links that resolve (with their #anchors). Fast: text and `ast`
only, no Spark, no import of the package.

Each check is a function from a document's text to a list of problems, so that
`test_the_checks_catch_wrong_references` can show that each one fails on a wrong name."""

from __future__ import annotations

import ast
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
MAX_README_LINES = 150
TEST_COMMANDS = (".venv/bin/python -m pytest", "bash .ci/emr-releases")  # what .ci/run runs

TOP_DIRS = ("fruits_platform_tests", "fruits_platform", "deploy", "bootstrap", "benchmarks", "docs", ".ci")
# Repository paths anywhere in the text (prose, code spans, code blocks), not inside a URL or another path.
PATH = re.compile(r"(?<![\w./$:-])((?:" + "|".join(re.escape(d) for d in TOP_DIRS) + r")/[\w./<>{}*$…-]*)")
PLACEHOLDER = re.compile(r"[<>{}*$…]")
GENERATED = ("benchmarks/results/",)  # written by the benchmarks, ignored by git: named, never committed
# Source files only: data files (`manifest.json`, `latest.json`) are outputs, named but not in the repository.
FILE_NAME = re.compile(r"^[\w.-]+\.(?:py|sh|yaml|yml|toml|cfg)$")
# `test_x.py::test_y…`, `::test_y…` (the previous file of the same line), `test_y…` (some test file)
TEST_REF = re.compile(r"^(?:([\w/]+\.py))?(?:::)?(test_\w+)(…|\.\.\.)?$")
SETTING = re.compile(r"\bFRUITS_[A-Z0-9_]*[A-Z0-9]\b")
DOTTED = re.compile(r"^fruits_platform(?:\.\w+)+$")
COMMAND = re.compile(r"(?:^|\s)(?:\S*/)?fruits-platform\s+([a-z][\w-]*)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


@cache
def tracked_files() -> frozenset[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        files = set(out.splitlines())
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: what is on disk
        files = set()
    # Files on disk count too (a file being added is not tracked until committed).
    for top in TOP_DIRS:
        files |= {str(p.relative_to(REPO)) for p in (REPO / top).rglob("*") if p.is_file()}
    return frozenset(f for f in files if "__pycache__" not in f)


def exists(path: str) -> bool:
    path = path.rstrip("/")
    files = tracked_files()
    return path in files or any(f.startswith(path + "/") for f in files)


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", FENCE.sub("", text))


def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def module_source(path: str) -> str:
    return (REPO / path).read_text(encoding="utf-8")


@cache
def top_level_names(path: str) -> frozenset[str]:
    names = set()
    for node in ast.parse(module_source(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


@cache
def functions_of_test_modules() -> dict[str, frozenset[str]]:
    """Every test module's functions, by file name."""
    found = {}
    for path in sorted((REPO / "fruits_platform_tests").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found[path.name] = frozenset(
            n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        )
    return found


def package_python() -> list[Path]:
    return sorted((REPO / "fruits_platform").rglob("*.py"))


@cache
def settings_read() -> frozenset[str]:
    """FRUITS_* names the code reads: a string literal of its own in Python (`os.getenv("FRUITS_X")`,
    `EnvVar("FRUITS_X")`; a mention inside a message does not count), any non-comment line of the deployment's
    and CI's files; FRUITS_TEST_* from the test helpers."""
    names = set()
    quoted = re.compile(r"""["'](FRUITS_[A-Z0-9_]*[A-Z0-9])["']""")
    helpers = [p for p in (REPO / "fruits_platform_tests").glob("*.py") if p.name != Path(__file__).name]
    for path in package_python():
        names |= set(quoted.findall(path.read_text(encoding="utf-8")))
    for path in helpers:
        names |= {n for n in quoted.findall(path.read_text(encoding="utf-8")) if n.startswith("FRUITS_TEST_")}
    for top in ("deploy", "bootstrap", ".ci"):
        for path in (REPO / top).rglob("*"):
            if path.is_file() and path.suffix not in {".txt"}:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                names |= {m for line in lines if not line.lstrip().startswith("#") for m in SETTING.findall(line)}
    return frozenset(names)


@cache
def code_defaults() -> dict[str, str]:
    """The default of each setting read as `_setting("FRUITS_X", default)` or `os.getenv("FRUITS_X", default)`, or
    as a resource field's, `_from_env(Resource, field="FRUITS_X")` (`field: type = Field(default=...)` in the
    class), when it is a literal or a module-level constant that is one."""
    constants, calls, fields, field_settings = {}, [], {}, []
    for path in package_python():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                constants.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
            if isinstance(node, ast.ClassDef):
                fields.update({(node.name, field): default for field, default in field_defaults(node)})
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0] if node.args else None
            setting = str(first.value) if isinstance(first, ast.Constant) else ""
            if name == "_from_env" and isinstance(first, ast.Name):
                field_settings += [(k.value.value, (first.id, k.arg)) for k in node.keywords if k.arg]
            elif name in {"_setting", "getenv", "get"} and len(node.args) == 2 and setting.startswith("FRUITS_"):
                calls.append((setting, node.args[1]))
    calls += [(setting, fields[field]) for setting, field in field_settings]
    defaults = {}
    for setting, expr in calls:
        if isinstance(expr, ast.Constant):
            defaults[setting] = str(expr.value)
        elif isinstance(expr, ast.Name) and expr.id in constants:
            defaults[setting] = str(constants[expr.id])
    return defaults


def field_defaults(cls: ast.ClassDef) -> list[tuple[str, ast.expr]]:
    """(name, default expression) of the class's annotated fields: `x: int = 0` or `x: int = Field(default=0)`."""
    found = []
    for item in cls.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
            value = item.value
            if isinstance(value, ast.Call):
                value = next((k.value for k in value.keywords if k.arg == "default"), None)
            if value is not None:
                found.append((item.target.id, value))
    return found


@cache
def cli_commands() -> frozenset[str]:
    return frozenset(re.findall(r"add_parser\(\s*\"([\w-]+)\"", module_source("fruits_platform/cli.py")))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}


# --- the checks: a document's text in, problems out ---------------------------------------------------------


def missing_paths(text: str) -> list[str]:
    problems = []
    for path in sorted(set(PATH.findall(text))):
        path = path.rstrip(".,;:")
        if PLACEHOLDER.search(path) or path.startswith(GENERATED):
            continue
        if not exists(path):
            problems.append(f"no such file or folder: {path}")
    return problems


def missing_file_names(text: str) -> list[str]:
    """Bare file names in code spans (`test_emr.py`, `install.sh`): some file of the repository has that name."""
    names = {Path(f).name for f in tracked_files()}
    return [
        f"no file named {span}" for span in sorted(set(code_spans(text))) if FILE_NAME.match(span) and span not in names
    ]


def missing_tests(text: str) -> list[str]:
    problems, functions = [], functions_of_test_modules()
    for line in text.splitlines():
        current = None
        for span in re.findall(r"`([^`\n]+)`", line):
            match = TEST_REF.match(span)
            if not match:
                continue
            file, name, truncated = match.groups()
            if file:
                current = Path(file).name
            where = [current] if (file or span.startswith("::")) and current else list(functions)
            if file and current not in functions:
                problems.append(f"no test module {file}")
                continue
            candidates = set().union(*(functions.get(w, frozenset()) for w in where))
            found = any(f.startswith(name) for f in candidates) if truncated else name in candidates
            if not found:
                problems.append(
                    f"no test function {span} (looked in {', '.join(where) if file else 'every test module'})"
                )
    return problems


def missing_python_names(text: str) -> list[str]:
    """`fruits_platform.x.y` is a module; `fruits_platform.x.y.name` a module and one of its top-level names."""
    problems = []
    for span in sorted(set(code_spans(text))):
        if not DOTTED.match(span):
            continue
        parts = span.split(".")
        for cut in range(len(parts), 0, -1):
            base = "/".join(parts[:cut])
            module = next((p for p in (base + ".py", base + "/__init__.py") if exists(p)), None)
            if module:
                rest = parts[cut:]
                if len(rest) > 1 or (rest and rest[0] not in top_level_names(module)):
                    problems.append(f"{span}: {module} defines no {'.'.join(rest)}")
                break
        else:
            problems.append(f"{span}: no such module")
    return problems


def unknown_settings(text: str) -> list[str]:
    read = settings_read()
    return [f"{name} is read nowhere in the code" for name in sorted(set(SETTING.findall(text))) if name not in read]


def unknown_commands(text: str) -> list[str]:
    found = set()
    for span in code_spans(text):
        found |= set(COMMAND.findall(span if span.startswith((".venv", "fruits-platform")) else ""))
    for block in code_blocks(text):
        found |= set(COMMAND.findall(block))
    return [f"fruits-platform has no command {c!r}" for c in sorted(found - cli_commands())]


def broken_links(text: str, where: Path) -> list[str]:
    problems = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (where.parent / file).resolve() if file else where
        if not path.exists():
            problems.append(f"broken link: {target}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"broken link: {target} (no heading #{anchor})")
    return problems


def problems_of(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [
        *missing_paths(text),
        *missing_file_names(text),
        *missing_tests(text),
        *missing_python_names(text),
        *unknown_settings(text),
        *unknown_commands(text),
        *broken_links(text, path),
    ]


# --- the tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_reference_in_the_docs_exists(doc):
    problems = problems_of(doc)
    assert not problems, "\n".join(problems)


def test_the_benchmark_log_links_resolve():
    assert broken_links(RESULTS.read_text(encoding="utf-8"), RESULTS) == []


def test_the_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines: move detail to docs/"


def missing_in_layout(text: str) -> list[str]:
    """The README's *Layout* block: each folder at the start of a line exists, each `name.py` is a file of the
    folder it is listed under (or of its subfolders)."""
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    problems, folder = [], ""
    for line in block.splitlines():
        first = line.split()[0] if line.strip() else ""
        if not line.startswith(" ") and first:
            folder = first if first.endswith("/") else ""
            if not exists(first):
                problems.append(f"layout: no {first}")
        elif first.endswith("/") and folder and not exists(folder + first):
            problems.append(f"layout: no {folder + first}")
        for name in re.findall(r"\b[\w]+\.py\b", line):
            if not any(f.startswith(folder) and Path(f).name == name for f in tracked_files()):
                problems.append(f"layout: no {name} under {folder or 'the repository'}")
    return problems


def test_the_readme_layout_names_real_files():
    problems = missing_in_layout(README.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_doc():
    text = README.read_text(encoding="utf-8")
    assert [d.name for d in DOCS[1:] if f"(docs/{d.name})" not in text] == []


def test_the_readme_test_commands_are_the_ones_ci_runs():
    readme, ci = README.read_text(encoding="utf-8"), (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [line.strip() for line in ci.splitlines()]
    for command in TEST_COMMANDS:
        assert command in readme
        assert command in ci_lines


def configuration_table() -> dict[str, str]:
    """The README's settings table: each variable's default as written."""
    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1]) or [cells[1]]
        for i, name in enumerate(names):
            table[name] = defaults[i] if len(defaults) == len(names) else defaults[0]
    return table


def test_every_setting_the_code_reads_is_in_the_readme_table_with_its_default():
    table = configuration_table()
    package = set()
    quoted = re.compile(r"""["'](FRUITS_[A-Z0-9_]*[A-Z0-9])["']""")
    for path in package_python():
        package |= set(quoted.findall(path.read_text(encoding="utf-8")))
    assert sorted(package - set(table)) == []
    wrong = {}
    for name, default in code_defaults().items():
        written = table[name].lstrip("./")
        if default == "" and written in {"unset", "—", ""}:
            continue
        if written != default.replace("_", "").lstrip("./") and written != default.lstrip("./"):
            wrong[name] = (table[name], default)
    assert wrong == {}, "README default vs the code's"


def test_the_checks_catch_wrong_references(tmp_path):
    """Each check fails on a name that does not exist (and passes on its right form)."""
    assert missing_paths("see `fruits_platform/spark/featurize.py`") == []
    assert missing_paths("see `fruits_platform/spark/featurise.py`") != []
    assert missing_paths("in benchmarks/no_such_bench.py") != []
    assert missing_file_names("`test_emr.py`") == [] and missing_file_names("`test_emrr.py`") != []
    assert missing_tests("`test_failures.py::test_killed_run…`, `::test_crash_between…`") == []
    assert missing_tests("`test_failures.py::test_killed_run…`, `::test_no_such_test…`") != []
    assert missing_tests("`test_no_such_module.py::test_killed_run…`") != []
    assert missing_python_names("`fruits_platform.spark.featurize.read_and_inspect`") == []
    assert missing_python_names("`fruits_platform.spark.featurize._inspect_one`") != []
    assert missing_python_names("`fruits_platform.ml.no_such_module`") != []
    assert unknown_settings("`FRUITS_WEIGHTS`") == [] and unknown_settings("`FRUITS_WEIGHT`") != []
    assert unknown_commands("```bash\n.venv/bin/fruits-platform materialize\n```") == []
    assert unknown_commands("```bash\n.venv/bin/fruits-platform materialise\n```") != []
    layout = "## Layout\n\n```\nfruits_platform/\n  spark/  featurize.py, {}\n```\n"
    assert missing_in_layout(layout.format("jvm.py")) == [] and missing_in_layout(layout.format("jvmm.py")) != []
    doc = tmp_path / "doc.md"
    doc.write_text("# A heading\n")
    assert broken_links("[x](doc.md#a-heading)", doc) == []
    assert broken_links("[x](doc.md#another)", doc) != []
    assert broken_links("[x](no_such.md)", doc) != []
