"""The layering of the package (ARCHITECTURE.md), checked on the source so it cannot silently rot.

Every import of every module of ``hgfn_jax`` is read with ``ast`` (also imports inside functions, which the
lazy-loading code uses), and each room may import only the rooms listed for it below. The rules are the ones of
ARCHITECTURE.md: ``crystal`` knows no learning and nothing above it; environments import no policy, reward or
model; the library never imports its applications (``experiments``, ``benchmarks``, ``tests``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hgfn_jax"

# room -> rooms of hgfn_jax it may import (itself always allowed; "paths" is the settings module)
ALLOWED: dict[str, set[str]] = {
    "paths": set(),
    "crystal": {"paths"},
    "data": {"crystal", "paths"},
    "rundir": set(),
    "gflownet": {"rundir"},
    "envs": {"crystal", "gflownet", "data", "paths"},
    "policies": {"gflownet", "envs", "crystal", "paths"},
    "models": {"crystal", "data", "paths"},
    "rewards": {"crystal", "data", "models", "paths"},
    "metrics": {"crystal", "data", "models", "rewards", "paths"},
    "gan": {"crystal", "data", "metrics", "rundir", "paths"},
}
APPLICATIONS = ("experiments", "benchmarks", "tests")
LEARNING = ("optax", "flax.linen", "flax.training", "orbax", "torch", "matgl")  # crystal/ knows no learning


def _room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hgfn_jax":  # from hgfn_jax import paths -> hgfn_jax.paths
                out += [(node.lineno, f"hgfn_jax.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "tables" not in p.relative_to(PACKAGE).parts[1:2])


def test_every_module_belongs_to_a_known_room():
    rooms = {_room(p) for p in MODULES} - {"__init__"}
    assert rooms <= set(ALLOWED), f"new top-level room(s) {sorted(rooms - set(ALLOWED))}: add them to ALLOWED"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_respect_the_layering(path):
    room = _room(path)
    bad = []
    for line, name in _imports(path):
        top = name.split(".")[0]
        if top in APPLICATIONS:
            bad.append(f"line {line}: imports {name} (the library never imports its applications)")
        if top == "hgfn_jax" and room != "__init__":
            target = name.split(".")[1] if "." in name else "__init__"
            if target != room and target not in ALLOWED[room]:
                bad.append(f"line {line}: {room}/ imports {name}; {room}/ may import {sorted(ALLOWED[room])}")
        if room == "crystal" and any(name == m or name.startswith(m + ".") for m in LEARNING):
            bad.append(f"line {line}: crystal/ imports {name} (crystal/ knows no learning)")
    assert not bad, f"{path.relative_to(PACKAGE)}:\n" + "\n".join(bad)


def test_the_rule_catches_a_violation(tmp_path):
    """The checker itself: a module importing upwards is reported (so the test above can fail)."""
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from experiments.registry import build_task\n    import hgfn_jax.policies.mlp\n"
                    "from hgfn_jax import rewards\n")
    names = sorted(n for _, n in _imports(fake))
    assert names == ["experiments.registry", "hgfn_jax.policies.mlp", "hgfn_jax.rewards"]
