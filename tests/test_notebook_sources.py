"""The committed notebooks are exactly what their generators write (``tools/make_notebooks.py`` and
``tools/notebooks_<method>.py``), so a notebook cannot drift from its source; and the generators build every cell,
markdown included, without importing nbseg (they run here with ``nbseg`` made unimportable)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_NBSEG = ("import runpy, sys; sys.modules['nbseg'] = None; sys.argv = ['make_notebooks.py']; "
            "runpy.run_path('tools/make_notebooks.py', run_name='__main__')")


def test_every_committed_notebook_is_what_its_generator_writes(tmp_path):
    env = {**os.environ, "NBSEG_NOTEBOOKS_OUT": str(tmp_path)}
    subprocess.run([sys.executable, "-c", NO_NBSEG], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    written = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    committed = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert written == committed, "a notebook has no generator, or a generator writes a notebook not committed"
    stale = [name for name in written if (tmp_path / name).read_text() != (REPO / "notebooks" / name).read_text()]
    assert not stale, f"{stale} differ from their generators: run `python tools/make_notebooks.py` and commit"
