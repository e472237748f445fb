import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # interop_helpers.py beside these tests
