"""The shape of the package: one job per module, data flowing one way, small functions.

The layers follow the data: config -> data -> model -> steps -> records (metrics, checkpoints)
-> evaluation -> the training loop -> the command line. A module imports only from its own
layer or those before it, and the imports have no cycle.
"""

import ast
import graphlib

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "cifar_flax"
LAYERS = [
    ("errors", "console", "host_memory", "plots"),
    ("config_lib",),
    ("splits", "augment", "device_augment", "augment_worker", "input_pipeline", "data_report"),
    ("models.conv", "models.layers", "models.external", "models.nets", "models", "summary"),
    ("gradcam",),
    ("schedules", "steps", "distributed", "batch_source"),
    ("checkpoints", "metrics", "workdir", "preemption"),
    ("evaluation", "receptive_field"),
    ("train", "lr_find"),
    ("main",),
]
LAYER_OF = {module: index for index, layer in enumerate(LAYERS) for module in layer}
MAX_FUNCTION_LINES = 60
MAX_TRAIN_LINES = 250


def module_name(path):
    name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return name.removesuffix(".__init__").removesuffix("__init__") or "__init__"


def package_imports(tree):
    """The cifar_flax modules a module's code imports, wherever in the module it does."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cifar_flax"):
            if node.module == "cifar_flax":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.removeprefix("cifar_flax."))
        elif isinstance(node, ast.Import):
            found |= {
                alias.name.removeprefix("cifar_flax.")
                for alias in node.names
                if alias.name.startswith("cifar_flax.")
            }
    return found


MODULES = {
    module_name(path): ast.parse(path.read_text())
    for path in sorted(PACKAGE.rglob("*.py"))
    if module_name(path) != "__init__"
}
GRAPH = {name: package_imports(tree) for name, tree in MODULES.items()}


def test_every_module_has_a_layer_and_a_docstring_naming_its_job():
    assert set(MODULES) == set(LAYER_OF), "place a new module in LAYERS"
    assert [name for name, tree in MODULES.items() if not ast.get_docstring(tree)] == []


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_go_only_back_along_the_data_flow(name):
    later = [dep for dep in GRAPH[name] if LAYER_OF[dep] > LAYER_OF[name]]
    assert later == [], f"{name} imports {later}, which come after it"


def test_imports_have_no_cycle():
    graphlib.TopologicalSorter(GRAPH).prepare()  # raises CycleError


def test_functions_are_short_and_the_training_loop_fits_on_a_few_screens():
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
    assert len((PACKAGE / "train.py").read_text().splitlines()) <= MAX_TRAIN_LINES


def test_nothing_a_user_installs_refers_to_the_developers_shared_folder():
    paths = [*PACKAGE.rglob("*.py"), *(REPO_ROOT / "configs").glob("*.py")]
    assert [str(path) for path in paths if "shared/" in path.read_text()] == []
