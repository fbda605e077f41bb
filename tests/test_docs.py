"""The documentation site: its code runs, its API reference is complete, it builds.

Every ```python block of a page under ``docs/`` runs, page by page, in order,
in a fresh namespace (in a temporary working directory, so pages may write
files). The API reference names every public object by its public path, and
``mkdocs build --strict`` (warnings are errors) succeeds.
"""

import ast
import contextlib
import importlib
import importlib.util
import io
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT

import jaxopt_rules as jr
from jaxopt_rules import testing


DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)
# Optional modules a page may import; without them the page is skipped.
OPTIONAL = ("torch", "tensorboardX")
# Modules whose public names the API reference must cover.
DOCUMENTED_MODULES = (
    "jaxopt_rules",
    "jaxopt_rules.testing",
    "jaxopt_rules.torch_compat",
    "jaxopt_rules.quantized",
)
# Process language that user documentation must not contain.
PROCESS_LANGUAGE = (
    r"\bissue \d+",
    r"\(issue\b",
    r"\bno (GPU|device|accelerator) was (lent|available)",
    r"\bthe lead\b",
    r"\btargets? (from|do|does|hold|holds|met)\b",
    r"\bmet\?",
)


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


CODE_PAGES = [p for p in PAGES if python_blocks(p.read_text())]


def api_paths() -> Iterator[tuple[Path, str]]:
    """Every ``::: dotted.path`` directive under docs/."""
    for page in PAGES:
        for path in re.findall(r"^::: *([\w.]+)", page.read_text(), flags=re.M):
            yield page, path


def public_names(module_name: str) -> set[str]:
    """A module's public names: ``__all__``, else its non-underscore non-modules."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n in dir(module)
            if not n.startswith("_")
            and not isinstance(getattr(module, n), types.ModuleType)
        ]
    return {
        n
        for n in names
        if not n.startswith("__")  # __version__
        and not isinstance(getattr(module, n), types.ModuleType)
    }


def imported_modules(blocks: list[str]) -> set[str]:
    """The top-level modules the blocks import (``import a, b``, ``from a import``)."""
    found: set[str] = set()
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_imported_modules_sees_every_form():
    blocks = ["import jax.numpy as jnp, numpy as np, optax, torch", "from a.b import c"]
    assert imported_modules(blocks) == {"jax", "numpy", "optax", "torch", "a"}


@pytest.mark.parametrize("page", CODE_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    text = page.read_text()
    blocks = python_blocks(text)
    for module in sorted(imported_modules(blocks) & set(OPTIONAL)):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{page.relative_to(ROOT)} (block {i + 1})", "exec")
        exec(code, namespace)


def test_every_public_name_is_in_the_api_reference():
    documented = {path for _, path in api_paths()}
    missing = [
        f"{module}.{name}"
        for module in DOCUMENTED_MODULES
        for name in sorted(public_names(module))
        if f"{module}.{name}" not in documented
        # A top-level name re-exported from a submodule may be documented there.
        and not any(
            path.endswith(f".{name}") and _same_object(path, f"{module}.{name}")
            for path in documented
        )
    ]
    assert not missing, f"public names without a '::: ' entry in docs/api: {missing}"


def test_the_api_reference_names_objects_by_their_public_path():
    for page, path in api_paths():
        assert not any(part.startswith("_") for part in path.split(".")), (
            f"{page.name}: '::: {path}' names a private module or object"
        )
        _resolve(path)  # raises if the path does not exist


def test_no_process_language_in_user_docs():
    files = [*PAGES, ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
    found = [
        f"{f.relative_to(ROOT)}: {m.group(0)!r}"
        for f in files
        for pattern in PROCESS_LANGUAGE
        for m in re.finditer(pattern, f.read_text(), flags=re.I)
    ]
    assert not found, found


# Measured figures go stale in docstrings: they live in benchmarks/README.md.
MEASURED_FIGURE = r"\b\d+(\.\d+)?x\b|\bH[12]00\b|[+-]\d+(\.\d+)?%"


@pytest.mark.parametrize("name", ["flat_leaves", "quantized_state"])
def test_docstrings_point_to_benchmarks_instead_of_quoting_them(name: str):
    doc = getattr(importlib.import_module("jaxopt_rules"), name).__doc__
    assert not re.search(MEASURED_FIGURE, doc), re.search(MEASURED_FIGURE, doc)
    assert "benchmarks/" in doc


def test_torch_twin_comment_says_what_the_example_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("torch")
    page = (DOCS / "torch-compat.md").read_text()
    block = next(b for b in python_blocks(page) if "torch.optim.AdamW" in b)
    claim = re.search(r"print\(.*\)\s*# about (\S+?):", block)
    assert claim, "the print line's comment gives the expected size"
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "torch-compat.md", "exec"), {"__name__": "twin"})
    printed, expected = float(out.getvalue().split()[-1]), float(claim.group(1))
    assert expected / 3 <= printed <= expected * 3, (printed, expected)


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"]
    return subprocess.run(
        [*command, "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_site_builds_with_warnings_as_errors(tmp_path: Path):
    result = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    adam = (tmp_path / "site" / "api" / "catalog" / "index.html").read_text()
    assert "jaxopt_rules.adam" in adam
    assert "learning_rate" in adam
    # The catalog page's table (docs/_ext/catalog_table.py): a row per entry,
    # its rule linked to the rule's API entry.
    guide = (tmp_path / "site" / "catalog" / "index.html").read_text()
    assert "catalog-table" not in guide
    for spec in jr.REGISTRY:
        link = f'href="../api/catalog/#jaxopt_rules.{spec.name}"'
        assert link in guide, f"no table row linking {spec.name}"


def _catalog_table() -> types.ModuleType:
    """docs/_ext/catalog_table.py, the mkdocs hook that writes the catalog's table."""
    spec = importlib.util.spec_from_file_location(
        "catalog_table", DOCS / "_ext" / "catalog_table.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_catalog_table_has_one_row_per_registry_entry():
    table = _catalog_table().catalog_table()
    rows = [line for line in table.splitlines() if line.startswith("| [`")]
    named = re.findall(r"^\| \[`(\w+)`\]\[jaxopt_rules\.\1\]", table, flags=re.M)
    assert named == [s.name for s in jr.REGISTRY]
    assert len(rows) == len(jr.REGISTRY)
    adam = next(r for r in rows if r.startswith("| [`adam`]"))
    cells = [c.strip() for c in adam.strip("|").split(" | ")]
    assert cells[1:6] == [
        "`optax.adam`",
        'Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015',
        "`mu`, `nu`",
        "8.0",  # two float32 slots
        "`b1`, `b2`, `eps`, `eps_root`, `nesterov`",
    ]
    assert cells[6] == f"all {len(testing.CHECKS)}; 8- and 4-bit state"
    sgd = next(r for r in rows if r.startswith("| [`sgd`]"))
    assert "`trace` (with `momentum`; dtype: `accumulator_dtype`)" in sgd
    assert "| 0.0 to 4.0 |" in sgd  # no slot without momentum


def test_the_catalog_page_has_the_marker_and_no_written_table():
    page = (DOCS / "catalog.md").read_text()
    assert _catalog_table().MARKER in page
    names = {s.name for s in jr.REGISTRY}
    written = [
        line
        for line in page.splitlines()
        if line.startswith("|") and set(re.findall(r"`(\w+)`", line)) & names
    ]
    assert not written, written


def test_first_reference_reads_the_references_section():
    first_reference = _catalog_table().first_reference
    doc = """Rule.

    References:
        Smith and Jones, "A Short Title", ICML 2020.
        Doe, "Another", 2021. Verified against ``optax.rule``.

    Example:
        >>> 1
    """
    assert first_reference(doc) == 'Smith and Jones, "A Short Title", ICML 2020'
    long_title = doc.replace("A Short Title", "A Title " * 12)
    assert first_reference(long_title) == "Smith and Jones, ICML 2020"
    long_venue = doc.replace("ICML 2020", "Journal of Long Venue Names, 1964")
    assert first_reference(long_venue.replace("A Short Title", "T " * 40)) == (
        "Smith and Jones, 1964"
    )
    assert first_reference("No references.") == ""


def test_a_rule_made_with_jr_rule_renders(tmp_path: Path):
    """A public name that is a ``RuleFactory`` is documented with its signature."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "my_rules.py").write_text(
        textwrap.dedent('''
        """Rules."""

        import jaxopt_rules as jr


        @jr.rule(constraints={"learning_rate": ">= 0"})
        def scaled_momentum(grad, velocity, *, learning_rate, beta=0.9):
            """Heavy-ball SGD, one leaf at a time.

            Args:
                learning_rate: the step size.
                beta: the momentum's decay.

            Examples:
                >>> tx = scaled_momentum(0.1)
            """
            velocity = beta * velocity + grad
            return -learning_rate * velocity, velocity
        ''')
    )
    (tmp_path / "docs" / "index.md").write_text(
        "# Rules\n\n::: my_rules.scaled_momentum\n"
    )
    config = (ROOT / "mkdocs.yml").read_text()
    config = re.sub(r"^nav:\n(?:[ -].*\n)*", "", config, flags=re.M)
    config = config.replace("docs/_ext/", f"{DOCS}/_ext/")
    (tmp_path / "mkdocs.yml").write_text(config)
    result = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    html = (tmp_path / "site" / "index.html").read_text()
    assert "Heavy-ball SGD, one leaf at a time." in html
    assert "the momentum" in html
    text = re.sub(r"<[^>]+>", "", html)
    # The documented signature is the factory's, not the per-leaf function's.
    assert "velocity_dtype" in text
    assert "rounding_seed" in text
    assert not re.search(r"scaled_momentum\(\s*grad", text)


def _resolve(path: str) -> object:
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def _same_object(a: str, b: str) -> bool:
    try:
        return _resolve(a) is _resolve(b)
    except (ImportError, AttributeError):
        return False
