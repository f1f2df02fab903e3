"""The default recipe against scikit-learn's MLPClassifier on the same digits split, side by side.

Each side runs as a fresh process, timed from start to exit (imports included), so the figures are
what a user waits for. Accuracy is on the same 360 test images; scikit-learn gets standardized inputs
and its defaults otherwise.

    python benchmarks/digits_vs_sklearn.py --json          # full size
    python benchmarks/digits_vs_sklearn.py --quick --json  # a tiny run: checks that it works, not speed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SKLEARN = """
import json, sys
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# the same stratified 70/10/20 split the zoo's digits data set makes (same calls, same seed)
x, y = load_digits(return_X_y=True)
rest, test = train_test_split(range(len(y)), test_size=0.2, stratify=y, random_state=0)
train, _ = train_test_split(rest, test_size=0.1 / 0.8, stratify=y[rest], random_state=0)
train, test = sorted(train), sorted(test)
clf = make_pipeline(StandardScaler(), MLPClassifier(max_iter=int(sys.argv[1]), random_state=0))
clf.fit(x[train], y[train])
print(json.dumps({"test_acc": clf.score(x[test], y[test])}))
"""


def timed(cmd: list[str], cwd: str) -> tuple[dict, float]:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, check=True)
    seconds = time.perf_counter() - start
    return json.loads(out.stdout.strip().splitlines()[-1]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch / 5 iterations: checks that it works")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    overrides = ["trainer.max_epochs=1"] if args.quick else []
    with tempfile.TemporaryDirectory() as cwd:
        # W&B is off on both sides: the comparison is of training, not of logging
        zoo_out, zoo_s = timed([sys.executable, "-m", "zoo", "train", "mlp-digits", *overrides, "--json"], cwd)
        sk_out, sk_s = timed([sys.executable, "-c", SKLEARN, "5" if args.quick else "1000"], cwd)
    result = {
        "zoo_test_acc": round(zoo_out["test_acc"], 4),
        "sklearn_test_acc": round(sk_out["test_acc"], 4),
        "zoo_seconds": round(zoo_s, 2),
        "sklearn_seconds": round(sk_s, 2),
        "time_ratio": round(zoo_s / sk_s, 2),
        "test_images": 360,
        "cpu_cores": os.cpu_count(),
        "quick": args.quick,
    }
    if not args.json:
        print(f"zoo mlp-digits:        {result['zoo_test_acc']:.4f} test acc in {zoo_s:.1f} s (whole process)")
        print(f"sklearn MLPClassifier: {result['sklearn_test_acc']:.4f} test acc in {sk_s:.1f} s (whole process)")
        print(f"zoo takes {result['time_ratio']}x the time")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
