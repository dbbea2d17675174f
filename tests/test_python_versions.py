"""Supported Python versions: vlaforge needs 3.11 (typing.Self, ...); the torch-free robot client must
keep running on 3.10 (ROS 2 Humble ships Python 3.10)."""

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "packages" / "vlaforge-client"


def _requires_python(pyproject: Path) -> str:
    return tomllib.loads(pyproject.read_text())["project"]["requires-python"]


def test_declared_python_versions():
    assert _requires_python(ROOT / "pyproject.toml") == ">=3.11"
    assert _requires_python(CLIENT / "pyproject.toml") == ">=3.10"


def test_ruff_targets_the_declared_minimums():
    """ruff's pyupgrade rules must not suggest 3.11 syntax to the client, nor hold the package at 3.10."""
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"] == "py311"
    assert tomllib.loads((CLIENT / "ruff.toml").read_text())["target-version"] == "py310"


def test_client_parses_as_python_310():
    files = sorted((CLIENT / "src").rglob("*.py"))
    assert len(files) >= 3
    for path in files:
        # Rejects 3.11+ syntax (except*, PEP 646 star-unpacking in subscripts, ...). Library-level
        # 3.11 additions (typing.Self, tomllib) are not syntax: the import check below covers them.
        tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("typing", "enum", "asyncio"):
                new = {a.name for a in node.names} & NEW_IN_311.get(node.module, set())
                assert not new, f"{path}: imports {sorted(new)} from {node.module} (Python 3.11+)"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert "tomllib" not in names, f"{path}: tomllib is Python 3.11+"


NEW_IN_311 = {
    "typing": {
        "Self",
        "LiteralString",
        "Never",
        "assert_never",
        "assert_type",
        "reveal_type",
        "Required",
        "NotRequired",
        "TypeVarTuple",
        "Unpack",
        "dataclass_transform",
    },
    "enum": {"StrEnum", "ReprEnum", "verify", "EnumCheck", "FlagBoundary", "member", "nonmember"},
    "asyncio": {"TaskGroup", "timeout", "timeout_at", "Runner", "Barrier"},
}
