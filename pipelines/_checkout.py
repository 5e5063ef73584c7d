"""Imported first by every stage script: puts this checkout's src/ at the head of sys.path.

A stage must run the code of the checkout DVC runs it in: `dvc exp run --temp` and `--queue` run a copy of the
repository elsewhere, while an installed tinylm (an editable install included) points at the original's src/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
