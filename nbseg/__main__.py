"""``python -m nbseg ...`` (what ``torchrun -m nbseg`` launches)."""
import sys

from nbseg.cli import main

sys.exit(main())
