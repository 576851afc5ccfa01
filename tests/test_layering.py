"""The layering of the code, read from the source (every import, lazy ones inside functions included):

- layers/ and models/ import no training, no serving and use no tf.distribute (strategies belong to
  the trainer);
- data/ imports no models (nor training, serving or export code);
- serving/ imports no model-building, training or export code (it serves what an export wrote);
- the client and the painting page import no TensorFlow (checked on the source, and in a fresh
  process by what is in sys.modules after importing them).

Each file is one case, so a failure names the file and the import. The checker is shown to fail on
a copy of the tree with forbidden imports planted in it.
"""

import ast
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import typing

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    folders: typing.Tuple[str, ...]  # relative to the repository; every .py below them
    forbidden: typing.Tuple[str, ...]  # module names; a name forbids its submodules too
    no_tf_distribute: bool = False
    files: typing.Tuple[str, ...] = ()  # single files the rule covers as well


MODEL_BUILDING = ("spade_tf.models", "spade_tf.layers", "spade_tf.losses")
RULES = (
    Rule("layers and models", ("spade_tf/layers", "spade_tf/models"),
         ("spade_tf.training", "serving", "tensorflow.distribute"), no_tf_distribute=True),
    Rule("data", ("spade_tf/data",), ("spade_tf.models", "spade_tf.training", "spade_tf.export", "serving")),
    Rule("serving", ("serving",), (*MODEL_BUILDING, "spade_tf.training", "spade_tf.export", "spade_tf.io")),
    Rule("client and painting page", ("serving/studio", "client"),
         ("tensorflow", "keras", "tensorflow_serving", "spade_tf"), files=("serving/client.py",)),
)

# Known breaks of a rule, each with the reason it stands: {(rule name, file): pytest mark}. The mark is
# strict, so a break that is mended fails the case until its entry is removed.
KNOWN = {}


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] == "client":  # client/spade_tf_client/... is the package spade_tf_client
        parts = parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path, root: pathlib.Path) -> typing.List[typing.Tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved; `from a import b`
    gives a.b as well as a, so that importing a submodule by name counts."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def tf_distribute_uses(path: pathlib.Path) -> typing.List[int]:
    """Lines that reach tf.distribute through a name bound to tensorflow (`import tensorflow as tf`)."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names if alias.name == "tensorflow"}
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "distribute"
            and isinstance(node.value, ast.Name) and node.value.id in aliases]


def violations(rule: Rule, path: pathlib.Path, root: pathlib.Path = REPO) -> typing.List[str]:
    """What in `path` breaks `rule`, as "file:line: text"; empty when nothing does."""
    where = path.relative_to(root).as_posix()
    found = [f"{where}:{line}: imports {name}" for line, name in imports(path, root)
             if any(name == f or name.startswith(f + ".") for f in rule.forbidden)]
    if rule.no_tf_distribute:
        found += [f"{where}:{line}: uses tf.distribute" for line in tf_distribute_uses(path)]
    return sorted(set(found))


def files_of(rule: Rule, root: pathlib.Path = REPO) -> typing.List[pathlib.Path]:
    paths = [p for folder in rule.folders for p in sorted((root / folder).rglob("*.py")) if "__pycache__" not in p.parts]
    return paths + [root / f for f in rule.files if (root / f).is_file()]


CASES = [
    pytest.param(rule, path.relative_to(REPO).as_posix(), id=f"{rule.name}: {path.relative_to(REPO).as_posix()}",
                 marks=KNOWN.get((rule.name, path.relative_to(REPO).as_posix()), ()))
    for rule in RULES for path in files_of(rule)
]


def test_every_rule_covers_files():
    for rule in RULES:
        assert files_of(rule), f"no files for the rule on {rule.name}: were its folders moved?"
    for rule_name, file in KNOWN:
        assert (REPO / file).is_file(), f"{file} (a known break of the rule on {rule_name}) no longer exists"


@pytest.mark.parametrize("rule, file", CASES)
def test_layering(rule, file):
    assert violations(rule, REPO / file) == []


def test_client_and_painting_page_load_no_tensorflow():
    """What importing them loads, transitively, in a fresh process."""
    code = ("import sys, serving.client, serving.studio.app; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tensorflow_serving')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", result.stdout[:500]


PLANTED = {  # file in a copy of the tree -> (a forbidden line added at its end, the rule it breaks)
    "spade_tf/models/generator.py": ("from spade_tf.training import trainer", "layers and models"),
    "spade_tf/layers/spade.py": ("import tensorflow as tf\nSTRATEGY = tf.distribute.get_strategy()", "layers and models"),
    "spade_tf/layers/resblock.py": ("from tensorflow import distribute", "layers and models"),
    "spade_tf/data/pipeline.py": ("def _lazy():\n    from ..models import build_generator", "data"),
    "serving/server.py": ("from spade_tf.export.module import ExportModule", "serving"),
    "serving/studio/layouts.py": ("import tensorflow as tf", "client and painting page"),
}


def test_the_checker_finds_forbidden_imports_planted_in_a_copy(tmp_path):
    for folder in ("spade_tf", "serving"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    rules = {rule.name: rule for rule in RULES}
    before = {name: {p.relative_to(tmp_path).as_posix(): violations(rule, p, tmp_path) for p in files_of(rule, tmp_path)}
              for name, rule in rules.items()}
    for file, (line, rule_name) in PLANTED.items():
        assert before[rule_name][file] == [], f"{file} already breaks the rule on {rule_name}"
        path = tmp_path / file
        path.write_text(path.read_text() + "\n\n" + line + "\n")
    for name, rule in rules.items():
        for path in files_of(rule, tmp_path):
            file = path.relative_to(tmp_path).as_posix()
            found = violations(rule, path, tmp_path)
            if PLANTED.get(file, (None, None))[1] == name:
                added = sorted(set(found) - set(before[name][file]))
                assert len(added) >= 1, f"the planted line in {file} was not found: {found}"
            else:
                assert found == before[name][file], file


def test_tests_import_helpers_not_other_tests():
    """Shared test code is in tests/helpers, imported as `helpers`: no test imports another test file,
    conftest, or `tests.<module>` (which would load a second copy of a helper)."""
    tests = REPO / "tests"
    found = [f"{path.name}:{line}: imports {name}" for path in sorted(tests.rglob("*.py")) if "__pycache__" not in path.parts
             for line, name in imports(path, REPO)
             if name.split(".")[0] in ("conftest", "tests") or name.split(".")[0].startswith("test_")]
    assert found == []


# --- the size of the code: no module over MAX_MODULE_LINES, no function over MAX_FUNCTION_LINES ----------

MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80
SKIPPED = {"tests", ".venv", ".git", "build", "spade_tf_client"}  # top-level folders; spade_tf_client links to client/


def source_files(root: pathlib.Path = REPO) -> typing.List[pathlib.Path]:
    """Every .py and .js file outside the tests, but protoc's generated *_pb2*.py."""
    return [p for ext in ("py", "js") for p in sorted(root.rglob(f"*.{ext}"))
            if p.relative_to(root).parts[0] not in SKIPPED and "__pycache__" not in p.parts and "_pb2" not in p.name]


def oversized(path: pathlib.Path, root: pathlib.Path = REPO) -> typing.List[str]:
    """What in `path` is too long, as "file: ..."; functions are counted in Python files only."""
    where, text = path.relative_to(root).as_posix(), path.read_text()
    found = [f"{where}: {len(text.splitlines())} lines"] if len(text.splitlines()) > MAX_MODULE_LINES else []
    if path.suffix == ".py":
        found += [f"{where}:{node.lineno}: {node.name} has {node.end_lineno - node.lineno + 1} lines"
                  for node in ast.walk(ast.parse(text, str(path)))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    return found


def test_no_module_or_function_is_too_long():
    files = source_files()
    assert {"spade_tf/config.py", "serving/studio/static/studio.js", "client/spade_tf_client/client.py"} <= {
        p.relative_to(REPO).as_posix() for p in files}
    assert [problem for path in files for problem in oversized(path)] == []


def test_the_size_check_finds_a_long_module_and_a_long_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "long.js").write_text("let x = 1;\n" * (MAX_MODULE_LINES + 1))
    lines = lambda n, indent: "".join(f"{indent}x{i} = {i}\n" for i in range(n))  # noqa: E731
    (tmp_path / "pkg" / "fits.py").write_text("def f():\n" + lines(MAX_FUNCTION_LINES - 1, "    "))
    (tmp_path / "pkg" / "long.py").write_text("class A:\n    def g(self):\n" + lines(MAX_FUNCTION_LINES, "        "))
    (tmp_path / "pkg" / "x_pb2.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert [p.name for p in source_files(tmp_path)] == ["fits.py", "long.py", "long.js"]
    assert [problem for path in source_files(tmp_path) for problem in oversized(path, tmp_path)] == [
        "pkg/long.py:2: g has 81 lines", f"pkg/long.js: {MAX_MODULE_LINES + 1} lines"]
