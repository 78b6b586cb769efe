"""Generate the synthetic demo dataset: ``python -m worker.demo OUT_DIR [--subjects N]``.

Run as its own process so that the backend, which imports the result, never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from worker.ml.synthetic import SyntheticConfig, ensure_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--subjects", type=int, default=16, help="half healthy, half lesions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_lesion = args.subjects // 2
    config = SyntheticConfig(n_healthy=args.subjects - n_lesion, n_lesion=n_lesion, seed=args.seed)
    with tqdm(total=args.subjects, desc="demo subjects", unit="subject") as bar:

        def progress(done: int, total: int) -> None:
            bar.n = done
            bar.refresh()

        records = ensure_dataset(args.out_dir, config, progress=progress)
    print(f"{len(records)} subjects in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
