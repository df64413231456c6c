"""The project's layers, read from its import statements (those inside functions included):
data never depends on models, inference never on training, and no module on itself."""
import ast
import os

import pytest

from conftest import REPO

PACKAGES = ("Datasets", "Models", "tracking")
TOP_LEVEL = ("Training", "Evaluate", "Sample")
TRAINING_MODULES = {"Models.solver", "Models.weak_label.solver", "Models.adversarial"}
INFERENCE_MODULES = ("Models.checkpoint", "Models.weak_label.separation", "Models.streaming", "Models.windowing",
                     "Models.separation", "Models.scoring", "Models.registry")


def _module_files() -> dict[str, str]:
    files = {name: os.path.join(REPO, f"{name}.py") for name in TOP_LEVEL}
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(REPO, package)):
            for name in names:
                if name.endswith(".py"):
                    relative = os.path.relpath(os.path.join(folder, name), REPO)[:-len(".py")]
                    module = relative.replace(os.sep, ".").removesuffix(".__init__")
                    files[module] = os.path.join(folder, name)
    return files


def _import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its code."""
    files = _module_files()
    graph = {}
    for module, path in files.items():
        with open(path) as handle:
            tree = ast.parse(handle.read())
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                # `from package import module` depends on the module; `from module import name` on the module
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            imported |= {name for name in names if name in files and name != module}
        graph[module] = imported
    return graph


GRAPH = _import_graph()


def _reachable(start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for imported in GRAPH[stack.pop()]:
            if imported not in seen:
                seen.add(imported)
                stack.append(imported)
    return seen


def test_data_layer_never_imports_models_tracking_or_the_experiments():
    offenders = {module: sorted(imported for imported in GRAPH[module]
                                if not imported.startswith("Datasets") and imported != "Sample")
                 for module in GRAPH if module.startswith("Datasets")}
    assert {module: names for module, names in offenders.items() if names} == {}


@pytest.mark.parametrize("module", INFERENCE_MODULES)
def test_inference_never_imports_a_training_module(module):
    assert _reachable(module) & TRAINING_MODULES == set()


def test_no_import_cycles():
    cycles = sorted(module for module in GRAPH if module in _reachable(module))
    assert cycles == []


def test_training_does_not_import_the_evaluation_experiment():
    """Importing Evaluate.py would create its Sacred experiment a second time in the process."""
    assert "Evaluate" not in _reachable("Training")
