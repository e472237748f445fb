import sys
from pathlib import Path

# tiny_target.py is a helper module beside these tests (also runnable as a script).
sys.path.insert(0, str(Path(__file__).resolve().parent))
