"""The ``python3`` Jupyter kernel papermill starts: it must run this interpreter (whose packages hold nbseg).

jupyter_client and ipykernel are imported when a kernel is needed: they come with the ``notebooks`` extra."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from nbseg.errors import ConfigError
from nbseg.notebook_runner.notebooks import KERNEL_NAME

# ----------------------------------------------------------------------------------------------------------------
# kernel


def _runs_current_interpreter(executable: str) -> bool:
    """Whether a kernel spec's ``argv[0]`` starts this environment's Python."""
    # jupyter_client launches sys.executable for a bare python / python3 / python3.X (jupyter_client.manager).
    if executable in {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}:
        return True
    # Same bin folder = same environment; resolving symlinks would wrongly equate a venv with its base Python.
    return os.path.dirname(os.path.abspath(executable)) == os.path.dirname(os.path.abspath(sys.executable))


def ensure_python3_kernel() -> Path:
    """Make sure the ``python3`` Jupyter kernel runs this interpreter; install one into ``sys.prefix`` if not.

    On a fresh machine the only ``python3`` kernel may be missing or belong to another Python, whose packages
    lack nbseg. The kernel is installed into the environment (never the user's home). Returns the spec's folder.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def current_spec():
        try:
            return KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        except NoSuchKernel:
            return None

    spec = current_spec()
    if spec is not None and spec.argv and _runs_current_interpreter(spec.argv[0]):
        return Path(spec.resource_dir)
    from ipykernel.kernelspec import install

    install(prefix=sys.prefix, kernel_name=KERNEL_NAME)
    spec = current_spec()
    if spec is None or not spec.argv or not _runs_current_interpreter(spec.argv[0]):
        where = "none found" if spec is None else f"{spec.resource_dir} runs {spec.argv[:1]}"
        raise ConfigError(f"installed a '{KERNEL_NAME}' Jupyter kernel into {sys.prefix}, but another one takes "
                          f"precedence ({where}) instead of {sys.executable}; remove it (jupyter kernelspec "
                          "remove python3) or set JUPYTER_PREFER_ENV_PATH=1")
    print(f"installed the '{KERNEL_NAME}' Jupyter kernel for {sys.executable} into {spec.resource_dir}")
    return Path(spec.resource_dir)
