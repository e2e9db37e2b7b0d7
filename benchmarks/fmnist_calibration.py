"""FD-FMNIST of *real* Fashion-MNIST training images against the test split: the floor a perfect generator would
reach at each sample count (docs/EVALUATION.md). Prints one JSON line per count.

    python benchmarks/fmnist_calibration.py [--counts 1000,5000,10000] [--seed 0] [--classifier cnn|resnet]
"""
import argparse
import json

import numpy as np

from sra.data.pixels import load_fashion_mnist
from sra.evaluation.fmnist import fmnist_scorer, fmnist_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,5000,10000", help="comma-separated numbers of real images")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random subsets")
    ap.add_argument("--classifier", default="cnn", choices=("cnn", "resnet"), help="which FD-FMNIST classifier")
    args = ap.parse_args()
    scorer = fmnist_scorer(classifier=args.classifier)  # trains and caches the classifier on first use, printing its test accuracy
    print(json.dumps({"classifier_test_accuracy": scorer.test_accuracy, **scorer.info}))
    images, labels = load_fashion_mnist(split="train")
    for n in map(int, args.counts.split(",")):
        idx = np.random.default_rng(args.seed).choice(len(images), n, replace=False)
        print(json.dumps({"real_images": n, **fmnist_scores(images[idx], labels[idx], scorer=scorer)}))


if __name__ == "__main__":
    main()
