"""The built wheel installs one import name, ``circat``: checked in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python*/site-packages")
    return found


def test_the_wheel_installs_only_circat_and_its_cli_runs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True)
    (wheel,) = (tmp_path / "dist").glob("circat-*.whl")
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = _site_packages(venv)
    # the dependencies come from this environment's site-packages, added as a path (its .pth files, which
    # would put this checkout on the path, are not processed there)
    (packages / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    before = set(os.listdir(packages))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True)
    gained = set(os.listdir(packages)) - before
    assert {p for p in gained if not p.endswith(".dist-info")} == {"circat"}, gained
    assert [p for p in gained if p.endswith(".dist-info")] == ["circat-0.1.0.dist-info"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = ("import json, sys, circat, circat.service.graph; "
             "print(json.dumps([circat.__file__, circat.service.graph.__file__, 'torch' in sys.modules, "
             "[m for m in sys.modules if m.split('.')[0] in ('service', 'workers')]]))")
    out = subprocess.run([venv / "bin" / "python", "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    where, graph_file, torch_loaded, stray = json.loads(out)
    assert where.startswith(str(packages)) and graph_file.startswith(str(packages / "circat" / "service"))
    assert not torch_loaded and stray == []
    listed = subprocess.run([venv / "bin" / "circat", "tasks", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True).stdout
    assert "greater-than" in {t["task"] for t in json.loads(listed)}
    store = f"sqlite:///{tmp_path / 'c.db'}"
    shown = subprocess.run([venv / "bin" / "circat", "demo", "--literature", "--json", "--report-out",
                            str(tmp_path / "r.html")], cwd=tmp_path, env=env | {"CIRCAT_STORE_URL": store},
                           capture_output=True, text=True, check=True).stdout
    assert len(json.loads(shown)["circuits"]) == 5  # the schema files and literature data came with the wheel


def test_the_docker_image_copies_every_folder_the_wheel_is_built_from():
    import tomllib

    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in [*wheel["packages"], *wheel["force-include"]]:
        assert f"COPY {folder} ./{folder}" in dockerfile, folder
