"""tox's inline plugin: environments share the heavy dependencies of the Python that runs tox.

`system_site_packages = true` only shows an environment the site-packages of the *base* interpreter. When tox
runs from a venv (`pip install -e ".[test]" && tox`), torch, DeepSpeed and torch-fidelity live in that venv, so
without this every environment would install them again (~5.6 GB each). Before an environment installs
anything, a .pth file adds the running interpreter's site directories after the environment's own: pip then
keeps what is there and installs only protobench and what is missing, exactly as with system site-packages.
Only for environments that ask for system site-packages and run the same Python version as tox.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tox.plugin import impl

PTH = "_tox_host_site_packages.pth"


def host_site_dirs() -> list[str]:
    """The site directories of the interpreter running tox (a venv's own, and its base's if it shares them)."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


@impl
def tox_on_install(tox_env: Any, arguments: Any, section: str, of_type: str) -> None:
    conf = tox_env.conf
    if "system_site_packages" not in conf or not conf["system_site_packages"]:
        return
    if tuple(tox_env.base_python.version_info[:2]) != sys.version_info[:2]:
        return  # another Python's packages would not load here
    site = Path(conf["env_site_packages_dir"])
    own = {str(site.resolve())}
    lines = "".join(f"{d}\n" for d in host_site_dirs() if str(Path(d).resolve()) not in own)
    pth = site / PTH
    if site.is_dir() and (not pth.exists() or pth.read_text() != lines):
        pth.write_text(lines)
