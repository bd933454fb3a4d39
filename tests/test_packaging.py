"""What installing stet pulls in: no dependency version with a known vulnerability."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

#: Versions an extra must never admit: (package, version, why).
VULNERABLE = [
    ("pyarrow", "14.0.0", "CVE-2023-47248: arbitrary code execution reading IPC/Parquet"),
    ("pyarrow", "13.0.0", "CVE-2023-47248"),
]


def _requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts.extend(t for t in extra if not t.startswith("stet["))
    return [Requirement(t) for t in texts]


def test_no_extra_admits_a_version_with_a_known_vulnerability() -> None:
    reqs = _requirements()
    for name, version, why in VULNERABLE:
        for req in reqs:
            if req.name == name:
                assert not req.specifier.contains(version), f"{req} admits {version}: {why}"


def test_the_parquet_extra_requires_pyarrow() -> None:
    assert any(r.name == "pyarrow" for r in _requirements())
