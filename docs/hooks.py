"""MkDocs hook: lay out the package as it installs, for the API reference.

``envs/``, ``policies/`` and ``datasets/`` install as ``wfm_sim.envs`` ... through setuptools'
package-dir mapping, which the docstring collector (griffe) does not follow. On import this hook
builds ``build/api_src/wfm_sim``: links to every entry of ``wfm_sim/`` plus the three mapped
folders, and ``mkdocs.yml`` points mkdocstrings there.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"envs": "envs", "policies": "policies", "datasets": "datasets"}


def _build() -> None:
    pkg = ROOT / "build" / "api_src" / "wfm_sim"
    pkg.mkdir(parents=True, exist_ok=True)
    for link in pkg.iterdir():
        if link.is_symlink():
            link.unlink()
    for entry in (ROOT / "wfm_sim").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (pkg / name).symlink_to(ROOT / folder)


_build()
