"""Golden average precision: scikit-learn's average_precision_score per class on fixed scores (ties
included, one class without positives), and their mean over the classes with positives, as
tests/trainers/test_classify_multilabel.cpp compares trainers/eval/average_precision.cpp against.
  python3 scripts/golden/average_precision.py tests/fixtures/average_precision.json
Needs numpy and scikit-learn (Debian: python3-sklearn; run with /usr/bin/python3 where another python3 comes first)."""
import json
import sys

import numpy as np
import sklearn
from sklearn.metrics import average_precision_score

rng = np.random.default_rng(7)
N, C = 60, 6
# Scores on a coarse grid, so many tie; class 5 has no positive.
scores = np.round(rng.normal(size=(N, C)), 1).astype(np.float32)
targets = (rng.random((N, C)) < np.array([0.1, 0.3, 0.5, 0.05, 0.8, 0.0])).astype(np.int64)
targets[0, 3] = 1  # at least one positive for class 3
scores[:, 1] += targets[:, 1] * 1.0  # class 1 is easy
per_class = [float(average_precision_score(targets[:, c], scores[:, c])) if targets[:, c].any() else None for c in range(C)]
scored = [a for a in per_class if a is not None]
with open(sys.argv[1], "w") as f:
    json.dump({"sklearn": sklearn.__version__, "classes": C, "scores": scores.reshape(-1).tolist(),
               "targets": targets.reshape(-1).tolist(), "per_class": per_class, "map": sum(scored) / len(scored)}, f)
    f.write("\n")
