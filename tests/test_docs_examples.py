"""Every Python and shell example in the README and the docs runs, so none can go stale.

Each fenced ``python`` or ``bash`` block of ``README.md`` and ``docs/**/*.md`` is a test. Shell
blocks run at tiny sizes: the counts a reader would use (``--episodes 200``, ``--steps 3000``)
are cut to a few (:data:`TINY`), so the command, its flags and its files are what is tested,
not its hours. HTML comments on the lines right before a block can say more:

* ``<!-- test: replace "A" -> "B"; "C" -> "D" -->``: text replaced before running (Python
  blocks, or a shell count the table does not know);
* ``<!-- test: before "shell command" -->``: run first, in the same folder (files it needs);
* ``<!-- test: slow (why) -->``: run with ``pytest -m slow`` only;
* ``<!-- test: skip (why) -->``: never run here, and why (CI's own install command; files that
  cannot be downloaded here).

Blocks run in a fresh folder holding a link to ``scripts/``, with ``MUJOCO_GL=egl``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TINY = [(r"--episodes \d[\d_,]*", "--episodes 1"), (r"--steps \d+", "--steps 2"), (r"--starts \d+", "--starts 1"),
        (r"--horizon \d+", "--horizon 3"), (r"--samples \d+", "--samples 1"), (r"--iterations \d+", "--iterations 1"),
        (r"--num-envs \d+", "--num-envs 4"), (r"--windows \d+", "--windows 2"), (r"--batch-size \d+", "--batch-size 2"),
        (r"--collect-episodes \d+", "--collect-episodes 1"), (r"--wm-steps \d+", "--wm-steps 2"),
        (r"--policy-iterations \d+", "--policy-iterations 1"), (r"--score-starts \d+", "--score-starts 1"),
        (r"--probe-starts \d+", "--probe-starts 2 --probe-steps 5"), (r"--branches \d+", "--branches 2"),
        (r"--preset small(-mv)?\b", "--preset tiny"), (r"--workers \d+", "--workers 1")]
DIRECTIVE = re.compile(r"<!--\s*test:\s*(\w+)\s*(.*?)\s*-->")


def collect() -> list:
    params = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^```(\w+)?\s*$", lines[i])
            if not m:
                i += 1
                continue
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            lang, code = m.group(1), "\n".join(lines[i + 1 : j])
            said, k = {}, i - 1  # the directive lines right above the fence
            while k >= 0 and DIRECTIVE.search(lines[k]):
                d = DIRECTIVE.search(lines[k])
                said[d.group(1)] = d.group(2)
                k -= 1
            if lang in ("python", "bash"):
                marks = [pytest.mark.slow] if "slow" in said else []
                name = f"{page.relative_to(ROOT)}:{i + 1}"
                params.append(pytest.param(page, lang, code, said, id=name, marks=marks))
            i = j + 1
    return params


def replacements(arg: str) -> list[tuple[str, str]]:
    pairs = re.findall(r'"((?:[^"\\]|\\.)*)"\s*->\s*"((?:[^"\\]|\\.)*)"', arg)
    if not pairs:
        raise ValueError(f"a replace directive needs '\"A\" -> \"B\"' pairs, got {arg!r}")
    return pairs


def prepare(lang: str, code: str, said: dict) -> str:
    if "replace" in said:
        for old, new in replacements(said["replace"]):
            if old not in code:
                raise AssertionError(f"the example no longer holds {old!r}: update its test directive")
            code = code.replace(old, new)
    if lang == "bash":
        for pattern, tiny in TINY:
            code = re.sub(pattern, tiny, code)
    return code


@pytest.mark.parametrize("page, lang, code, said", collect())
def test_example_runs(page, lang, code, said, tmp_path):
    if "skip" in said:
        pytest.skip(said["skip"] or "marked skip")
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    # WFM_SIM_SHIP_ROOT: scripts/ship_model.py writes its model and plots under the example's folder,
    # never over the shipped models of this checkout.
    env = {**os.environ, "MUJOCO_GL": "egl", "RAY_AUTH_MODE": "disabled", "PYTHONHASHSEED": "0",
           "WFM_SIM_SHIP_ROOT": str(tmp_path)}
    if "before" in said:
        before = re.fullmatch(r'"(.*)"', said["before"])
        assert before, f"a before directive needs one quoted shell command, got {said['before']!r}"
        subprocess.run(["bash", "-ec", before.group(1)], cwd=tmp_path, env=env, check=True, timeout=600)
    code = prepare(lang, code, said)
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-ec", code]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{page.name} example failed:\n{code}\n--- stderr ---\n{out.stderr[-3000:]}"


def test_directives_are_understood():
    """A directive the collector does not know would silently run an example it should not."""
    for page in PAGES:
        for m in DIRECTIVE.finditer(page.read_text()):
            assert m.group(1) in ("replace", "before", "slow", "skip"), f"{page}: unknown test directive {m.group(0)}"
            if m.group(1) == "replace":
                replacements(m.group(2))
    assert prepare("bash", "wfm-sim collect x --episodes 200 --steps 3000", {}) == \
        "wfm-sim collect x --episodes 1 --steps 2"
    with pytest.raises(AssertionError, match="no longer holds"):
        prepare("python", "print(1)", {"replace": '"print(2)" -> "print(3)"'})


def test_readme_is_a_front_door_not_a_notebook():
    """At most 250 lines, and nothing that dates: no commit hashes, no CI-run history."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    hashes = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"[a-f]", w) and re.search(r"\d", w)]
    assert not hashes, f"commit hashes in the README: {hashes}"
    for page in PAGES:
        body = page.read_text()
        assert "fresh-clone CI at" not in body and not re.search(r"\bat [0-9a-f]{7}\b", body), page
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", body), f"{page}: a dated history belongs in git, not the docs"


def public_modules() -> set[str]:
    """Every module of the installed package (wfm_sim, and envs/ policies/ datasets/ inside it)."""
    out = set()
    for folder, pkg in (("wfm_sim", "wfm_sim"), ("envs", "wfm_sim.envs"), ("policies", "wfm_sim.policies"),
                        ("datasets", "wfm_sim.datasets")):
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            if "pretrained" in parts or any(p.startswith("_") for p in parts):
                continue
            out.add(".".join([pkg, *parts]))
    return out


def test_the_api_reference_covers_every_public_module():
    listed = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        listed |= set(re.findall(r"^::: ([\w.]+)$", page.read_text(), re.M))
    modules = public_modules()
    assert not modules - listed, f"modules missing from docs/api/: {sorted(modules - listed)}"
    assert not listed - modules, f"docs/api/ lists modules that do not exist: {sorted(listed - modules)}"
