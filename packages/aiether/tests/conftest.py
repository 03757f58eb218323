"""Put this folder on sys.path so tests can import their helper modules (``_aiether_*`` fixtures, workers).

pytest runs with ``--import-mode=importlib``, which does not add test folders to sys.path.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
