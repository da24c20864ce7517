"""``python -m prnas.evaluate MODEL``: accuracy of a retrained network, or its predictions.

MODEL is a ``model.pt``, a retrain's run folder, or a Tune trial folder.

  python -m prnas.evaluate runs/demo                      # the retrain's own test set
  python -m prnas.evaluate runs/dl2/model.pt --data-dir ~/data/cifar  # a CIFAR root
  python -m prnas.evaluate runs/dl2 --data-dir ~/photos/test  # any ImageFolder tree
  python -m prnas.evaluate runs/dl2 --images a.png b.jpg  # predicted class per image

Accuracy goes to stdout as one JSON object (``top1``, ``top5`` with more than
5 classes, ``loss``, ``images``, and the accuracy the retrain logged when its
own test set was evaluated); predictions as ``file<TAB>class<TAB>probability``
lines; the summary line goes to stderr (not with -q). Flags, streams and exit codes
follow ``prnas/cli.py``: errors are one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from prnas import cli
from prnas.evaluate import (
    EvaluationError,
    dataset_for,
    evaluate,
    performance_for,
    predict_images,
)
from prnas.model_file import ModelFileError, read
from prnas.runtime.device import configure_threads, pick_device


def _parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m prnas.evaluate", __doc__)
    p.add_argument("model", metavar="MODEL", help="model.pt, a run folder or a trial folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-dir", dest="data", metavar="DIR",
                     help="a CIFAR root (its test batch) or an ImageFolder tree (all images); "
                          "default: the retrain's own test part")
    src.add_argument("--images", nargs="+", metavar="FILE",
                     help="print the predicted class of each image file")
    p.add_argument("--weights", choices=["final", "best-test-epoch"], default="final",
                   help="the final weights (default; the reported result) or those of the "
                        "epoch with the best test accuracy (chosen on the test set: optimistic)")
    p.add_argument("--batch-size", type=int,
                   help="default: the retrain's test batch size")
    p.add_argument("--device", default="auto",
                   help="auto (default: a GPU if there is one), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    cli.add_verbosity(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise EvaluationError(f"--batch-size must be >= 1, got {args.batch_size}")
        device = pick_device(args.device)
        mf = read(args.model)
        model = mf.network_for_inference(args.weights, device)
        perf = performance_for(mf, device)
        configure_threads()
        if args.images:
            for path, name, prob in predict_images(model, mf, args.images, device, perf):
                cli.result(f"{path}\t{name}\t{prob:.4f}")
            return cli.EXIT_OK
        dataset, description = dataset_for(mf, args.data)
        batch = args.batch_size or int(mf.evaluation.get("batch_size") or 128)
        result = evaluate(model, dataset, device, perf, batch, args.workers)
    except (ModelFileError, EvaluationError, RuntimeError, ValueError) as err:
        return cli.error(str(err))
    out = {"model": str(mf.path), "weights": args.weights, "data": description,
           **result.as_dict()}
    logged = (mf.metrics.get("test_acc") if args.weights == "final"
              else mf.best_test_acc)
    if args.data is None and logged is not None:
        out["logged_test_acc"] = logged
    cli.result(json.dumps(out))
    if args.verbosity == 0:
        return cli.EXIT_OK
    top5 = "" if result.top5 is None else f", top-5 {result.top5:.2f}%"
    note = "" if "logged_test_acc" not in out else (
        f"; the retrain logged {logged:.2f}%"
        + (" (identical)" if logged == result.top1 else " (differs)"))
    cli.progress(f"{mf.genotype.name}: top-1 {result.top1:.2f}% "
                 f"({result.correct}/{result.images}){top5} on {description}{note}")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
