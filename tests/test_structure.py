"""The house rules a reader relies on, checked: every module has a test module of its
own or is named by one ("Also covers: ..." in its docstring), no module is over 400
lines, the formatter is never overruled, and no two modules import each other. (The
layers between packages are import-linter's contract in pyproject.toml, run by
`make lint`.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src" / "skybuffer"
TESTS = REPO / "tests"
MAX_LINES = 400
COVERS = re.compile(r"(?:Also covers|Covers on purpose)[^:]*:(.*?)(?:\n\n|$)", re.S)
NAME = re.compile(r"\bskybuffer(?:\.\w+)+|\b[\w/]+\.py\b")


def modules() -> dict[str, Path]:
    """Dotted name -> path of every module with code of its own."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py") and len(path.read_text().splitlines()) < 80:
            continue  # a package marker or a two-line entry point
        dotted = ".".join(("skybuffer", *path.relative_to(SRC).with_suffix("").parts))
        found[dotted.removesuffix(".__init__")] = path
    return found


def named_by_tests() -> set[str]:
    """Modules a test module says it covers on purpose."""
    named: set[str] = set()
    for path in TESTS.rglob("test_*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        for match in COVERS.finditer(doc):
            names = NAME.findall(match.group(1))
            named |= {_dotted(n) for n in names if not n.startswith("tests/")}
    return named


def _dotted(name: str) -> str:
    """``skybuffer.ops.audit`` as it is, ``ops/audit.py`` as ``skybuffer.ops.audit``."""
    if name.endswith(".py") and not name.startswith("tests/"):
        return "skybuffer." + name.removesuffix(".py").replace("/", ".")
    return name


def own_test(dotted: str) -> bool:
    """tests/ops/bench/test_redis.py, or flat: tests/ops/test_bench_redis.py."""
    parts = dotted.split(".")[1:]
    nested = TESTS.joinpath(*parts[:-1]) / f"test_{parts[-1]}.py"
    flat = TESTS / parts[0] / f"test_{'_'.join(parts[1:])}.py" if len(parts) > 1 else nested
    return nested.exists() or flat.exists()


def test_every_module_has_a_test_module_or_is_named_by_one() -> None:
    named = named_by_tests()
    untested = [m for m in modules() if not own_test(m) and m not in named]
    assert not untested, f"no test module of their own, and none says it covers them: {untested}"


def test_what_tests_say_they_cover_exists() -> None:
    assert not named_by_tests() - set(modules()), "an 'Also covers:' names a module that is gone"


def test_no_module_is_over_400_lines() -> None:
    long = {
        m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by concept: {long}"


def test_the_formatter_is_never_overruled() -> None:
    skipped = [str(p.relative_to(REPO)) for p in SRC.rglob("*.py") if "fmt: skip" in p.read_text()]
    assert not skipped, f"build the arguments first and let ruff format: {skipped}"


def test_no_two_modules_import_each_other_even_indirectly() -> None:
    """import-linter's layers order the packages; inside a package, no cycle either."""
    import grimp

    graph = grimp.build_graph("skybuffer", exclude_type_checking_imports=False)
    cycles = {
        tuple(sorted((module, imported)))
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if module != imported and graph.chain_exists(importer=imported, imported=module)
    }
    assert not cycles, f"these modules import each other: {sorted(cycles)}"
