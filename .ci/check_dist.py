"""Check a release's files: ``python .ci/check_dist.py dist/veo4k-*.whl dist/veo4k-*.tar.gz``.

The wheel holds the package with ``py.typed`` and no tests; the sdist holds everything needed
to test and document the release (tests, docs, mkdocs.yml, noxfile.py, CHANGELOG.md); both say
the version of pyproject.toml, its one source (the code reads it from the package metadata).
"""

from __future__ import annotations

import email
import pathlib
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def tracked(*folders: str) -> set[str]:
    """The files git tracks under these folders."""
    out = subprocess.run(["git", "ls-files", *folders], cwd=ROOT, capture_output=True, text=True)
    return set(out.stdout.split())


def check_metadata(text: str, where: str) -> None:
    meta = email.message_from_string(text)
    assert meta["Name"] == PROJECT["name"], where
    assert meta["Version"] == PROJECT["version"], (where, meta["Version"])
    assert meta["Requires-Python"] == PROJECT["requires-python"], where
    assert meta.get_all("Classifier") == PROJECT["classifiers"], where
    assert meta["Description-Content-Type"] == "text/markdown", where


def check_wheel(path: pathlib.Path) -> None:
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        check_metadata(wheel.read(info).decode(), path.name)
    package = {n for n in tracked("veo4k") if n.endswith((".py", ".typed"))}
    assert "veo4k/py.typed" in names, "the wheel lacks py.typed"
    assert package <= names, f"the wheel lacks {sorted(package - names)}"
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/")) for n in names)


def check_sdist(path: pathlib.Path) -> None:
    with tarfile.open(path) as sdist:
        top, _, _ = sdist.getnames()[0].partition("/")
        names = {n.partition("/")[2] for n in sdist.getnames()}
        info = sdist.extractfile(f"{top}/PKG-INFO")
        assert info is not None
        check_metadata(info.read().decode(), path.name)
    wanted = tracked("veo4k", "tests", "docs", "benchmarks") | {
        "pyproject.toml", "README.md", "CHANGELOG.md", "mkdocs.yml", "noxfile.py",
    }  # fmt: skip
    assert wanted <= names, f"the sdist lacks {sorted(wanted - names)}"


def check_one_version() -> None:
    """No module spells the version: it is read from the package metadata."""
    literal = re.compile(rf"""["']{re.escape(PROJECT["version"])}["']""")
    for name in tracked("veo4k"):
        if name.endswith(".py"):
            assert not literal.search((ROOT / name).read_text()), f"{name} hard-codes the version"


def main(paths: list[str]) -> None:
    files = [pathlib.Path(p) for p in paths]
    wheels = [f for f in files if f.suffix == ".whl"]
    sdists = [f for f in files if f.name.endswith(".tar.gz")]
    if len(wheels) != 1 or len(sdists) != 1:
        raise SystemExit("give one wheel and one sdist")
    check_wheel(wheels[0])
    check_sdist(sdists[0])
    check_one_version()
    print(f"dist ok: {wheels[0].name}, {sdists[0].name}")


if __name__ == "__main__":
    main(sys.argv[1:])
