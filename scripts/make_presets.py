"""Write the paper presets, configs/paper/BACKBONE-DATASET-epsK.yaml (see robustft/experiments/presets.py).

    python scripts/make_presets.py [OUT_DIR]
"""

import sys
from pathlib import Path

from robustft.experiments.presets import write_presets

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "configs" / "paper"
    print(f"wrote {len(write_presets(out))} presets to {out}")
