"""The doors between packages, checked on every `make lint` (architecture.md, "Rules of the house").

- a system (`serval`, `goat`, `patient`) never imports another system;
- `dropbp` imports nothing of ours (it is usable on its own);
- a package reaches another only through what its `__init__` exports (`from verticals.llm import X`,
  never `verticals.llm.local`); the root CLI alone mounts each package's `cli` sub-app;
- benchmarks never use a private (underscored) name or module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "verticals"
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
SYSTEMS = {"serval", "goat", "patient"}


def imported(file: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) for every absolute import in `file`."""
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def door_breaches(file: Path, src: Path = SRC, packages: list[str] = PACKAGES) -> list[str]:
    home = file.relative_to(src).parts[0] if file.parent != src else None
    breaches = []
    for line, module, _ in imported(file):
        parts = module.split(".")
        if parts[0] != "verticals" or len(parts) < 2 or parts[1] == home:
            continue
        where, target = f"{file.relative_to(src.parent)}:{line} imports {module}", parts[1]
        if home == "dropbp":
            breaches.append(f"{where}: dropbp imports nothing of ours")
        elif home in SYSTEMS and target in SYSTEMS:
            breaches.append(f"{where}: a system never imports another system")
        elif target in packages and len(parts) > 2 and not (home is None and file.name == "cli.py"
                                                             and parts[2:] == ["cli"]):
            breaches.append(f"{where}: use what verticals.{target} exports")
    return breaches


def test_the_door_checker_catches_each_kind_of_breach(tmp_path: Path) -> None:
    fake = tmp_path / "verticals"
    for package, text in {"dropbp": "from verticals.llm import open_model\n",
                          "goat": "import verticals.patient\n",
                          "serval": "from verticals.llm.local import LocalModel\nfrom verticals.llm import LLMError\n",
                          "patient": "from verticals.patient.report import read_report\n"}.items():
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
        (fake / package / "m.py").write_text(text)
    (fake / "llm").mkdir()
    (fake / "llm" / "__init__.py").write_text("")
    packages = ["dropbp", "goat", "llm", "patient", "serval"]
    found = {p: door_breaches(fake / p / "m.py", fake, packages) for p in ("dropbp", "goat", "serval", "patient")}
    assert [len(found[p]) for p in ("dropbp", "goat", "serval", "patient")] == [1, 1, 1, 0]
    assert "dropbp imports nothing" in found["dropbp"][0] and "another system" in found["goat"][0]
    assert "use what verticals.llm exports" in found["serval"][0]


def test_packages_meet_only_through_their_doors() -> None:
    breaches = [b for file in sorted(SRC.rglob("*.py")) for b in door_breaches(file)]
    assert not breaches, "\n".join(breaches)


def test_benchmarks_use_no_private_helper() -> None:
    private = []
    for file in sorted((ROOT / "benchmarks").glob("*.py")):
        for line, module, names in imported(file):
            if module.startswith("verticals") and (any(p.startswith("_") for p in module.split("."))
                                                   or any(n.startswith("_") for n in names)):
                private.append(f"benchmarks/{file.name}:{line} imports {module} {names}")
    assert not private, "\n".join(private)
