"""Packaging: envs/, policies/, datasets/ install inside wfm_sim (never as top-level names)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import wfm_sim.envs, wfm_sim.datasets, wfm_sim.policies, wfm_sim.rollout, gymnasium as gym; " \
          "assert 'wfm_sim/Driving-v0' in gym.registry; import importlib.util as u; " \
          "assert u.find_spec('wfm_sim.datasets').origin.endswith('__init__.py')"


def test_installed_package_imports_from_outside_the_repo(tmp_path):
    out = subprocess.run([sys.executable, "-c", IMPORTS], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_wheel_has_only_the_wfm_sim_top_level_package(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                            "-w", str(tmp_path)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"wfm_sim", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for sub in ("envs", "datasets", "policies"):
        assert f"wfm_sim/{sub}/__init__.py" in names
    from wfm_sim.models import shipped_models

    for name in shipped_models():  # every model shipped in the checkout is in the wheel, whole
        for f in ("config.json", "model.safetensors", "contexts.safetensors", "README.md"):
            assert f"wfm_sim/pretrained/{name}/{f}" in names, f"{name}/{f} missing from the wheel"
        text = ROOT / "wfm_sim" / "pretrained" / name / "text_encoder"
        for f in (text.iterdir() if text.is_dir() else ()):  # a text model's encoder ships with it
            assert f"wfm_sim/pretrained/{name}/text_encoder/{f.name}" in names, f"{name}/text_encoder/{f.name} missing"
    from wfm_sim.policies.registry import shipped_policies

    for name in shipped_policies():
        for f in ("config.json", "model.safetensors", "README.md"):
            assert f"wfm_sim/pretrained/policies/{name}/{f}" in names, f"policy {name}/{f} missing from the wheel"
        wm = ROOT / "wfm_sim" / "pretrained" / "policies" / name / "world_model"
        for f in (sorted(p for p in wm.rglob("*") if p.is_file()) if wm.is_dir() else ()):  # the model it was trained in
            rel = f.relative_to(ROOT).as_posix()
            assert rel in names, f"{rel} missing from the wheel"
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", IMPORTS + "; import wfm_sim; assert wfm_sim.__file__.startswith(%r)" % str(target)],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_every_shipped_model_is_listed_as_a_data_package():
    import tomllib

    from wfm_sim.models import shipped_models

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name in shipped_models():
        assert f"wfm_sim.pretrained.{name}" in cfg["packages"], f"add wfm_sim.pretrained.{name} to pyproject packages"
        assert "*.safetensors" in cfg["package-data"][f"wfm_sim.pretrained.{name}"]
