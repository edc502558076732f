"""``unlearn-assert unlearn``: produce an unlearned checkpoint (optionally with SURE) from the CLI.

Why a CLI at all: a provider whose release gate failed wants to try the remediation with one
command, and then gate the result with the same tool. The command writes a normal safetensors
Hugging Face directory plus ``unlearn_run.json`` (settings, SURE selection, loss curve), refuses
to write into a non-empty directory, and never writes into the target directory.

Kept free of torch at import time: ``add_unlearn_parser`` runs for every ``unlearn-assert --help``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import METHODS

__all__ = ["add_unlearn_parser", "run_unlearn"]


def _method(value: str) -> str:
    key = value.strip().lower().replace("-", "_")
    if key not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method '{value}' (choose from {', '.join(METHODS)})")
    return key


def _quant_aware(value: str) -> tuple[str, ...]:
    from ..errors import ConfigError
    from .quant_aware_ids import check_quant_aware_ids

    try:
        ids = check_quant_aware_ids(value)
    except ConfigError as exc:
        message = str(exc).removeprefix("--quant-aware: ").removeprefix("--quant-aware ")
        raise argparse.ArgumentTypeError(message) from None
    if not ids:
        raise argparse.ArgumentTypeError("give one or more quantizer ids, e.g. --quant-aware rtn-w4g64")
    return ids


def add_unlearn_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``unlearn`` subcommand to an ``add_subparsers()`` object; its ``func`` is run_unlearn."""
    p = subparsers.add_parser(
        "unlearn",
        help="unlearn a data set's raw forget text from a model (GA / NPO, + GDR / KLR, optional SURE)",
        description="Train an unlearned checkpoint from --target on --data's raw forget text (raw/forget.json or .txt; "
        "and the "
        "raw retain text, MUSE's raw/retain1 + raw/retain2 or raw/retain.txt, for the _gdr / _klr regularizers); "
        "writes a safetensors checkpoint and unlearn_run.json to --out.",
    )
    p.add_argument("--method", type=_method, default="npo_klr", help=f"one of {', '.join(METHODS)} (default: npo_klr)")
    p.add_argument(
        "--target", required=True, help="local Hugging Face model directory to unlearn from (never modified)"
    )
    p.add_argument(
        "--data",
        required=True,
        help="MUSE data with raw text: a directory in MUSE's layout or its Hugging Face form, or hf:OWNER/NAME from "
        "the local cache",
    )
    p.add_argument("--out", required=True, help="new (or empty) directory for the unlearned checkpoint")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="number of optimizer steps")
    length.add_argument(
        "--epochs", type=int, help="epochs over the forget chunks (steps = epochs * ceil(chunks / batch size))"
    )
    p.add_argument(
        "--lr", type=float, default=1e-5, help="constant AdamW learning rate (default: 1e-5; SURE wants a large one)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="sequences per batch, forget and retain each (default: 4)")
    p.add_argument(
        "--retain-batch-size",
        type=int,
        default=None,
        help="retain sequences per step, if not --batch-size (fewer: a cheaper step, a noisier retain term)",
    )
    p.add_argument("--max-length", type=int, default=128, help="tokens per training chunk, BOS included (default: 128)")
    p.add_argument("--alpha", type=float, default=1.0, help="weight of the retain regularizer (default: 1.0)")
    p.add_argument("--beta", type=float, default=0.1, help="NPO's beta (default: 0.1, as in the paper)")
    p.add_argument("--seed", type=int, default=0, help="seed for data order and torch (default: 0)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="weights' dtype during training; bfloat16 = bf16 weights and updates (on CPU emulated in float32 compute) "
        "(default: float32)",
    )
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0.0)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="print one progress line every N steps, at most one per 30 s once the run is expected to take "
        "longer (default: 10)",
    )
    p.add_argument(
        "--sure",
        action="store_true",
        help="SURE: update only the most salient linear modules (default rule: --sure-top 0.1)",
    )
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--sure-top", type=float, help="fraction of linear modules to update, by saliency (e.g. 0.1)")
    rule.add_argument(
        "--sure-threshold", type=float, help="update the linear modules whose saliency exceeds this value"
    )
    p.add_argument("--sure-batches", type=int, default=4, help="forget batches for the saliency gradients (default: 4)")
    p.add_argument(
        "--sure-lm-head", action="store_true", help="let SURE select lm_head too (never when tied to the embedding)"
    )
    p.add_argument(
        "--quant-aware",
        type=_quant_aware,
        default=(),
        metavar="Q[,Q...]",
        help="quantization-aware unlearning: the loss also on the model fake-quantized by each Q (exact "
        "simulation, straight-through gradients); Q is rtn-*, bnb-fp4, bnb-nf4 or gguf-* (combinable "
        "with every method and --sure)",
    )
    p.add_argument(
        "--quant-aware-weight",
        type=float,
        default=1.0,
        help="weight of the mean quantized loss against the full-precision loss (default: 1.0)",
    )
    p.set_defaults(func=run_unlearn)
    return p


def run_unlearn(args: argparse.Namespace) -> int:
    """Validate everything cheap first (out dir, target dir, data files, settings), then train and save."""
    from ..data.muse import RAW_FORGET_HINT, RAW_RETAIN_HINT, load_data
    from ..errors import DataError
    from ..models import check_model_dir
    from .trainer import UnlearnSettings, check_out_dir, save_unlearned, unlearn

    target = check_model_dir(args.target)
    out = check_out_dir(args.out, [str(target)])
    settings = UnlearnSettings(
        method=args.method,
        lr=args.lr,
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        retain_batch_size=args.retain_batch_size,
        max_length=args.max_length,
        alpha=args.alpha,
        beta=args.beta,
        seed=args.seed,
        dtype=args.dtype,
        weight_decay=args.weight_decay,
        device=args.device,
        sure=args.sure,
        sure_top=args.sure_top,
        sure_threshold=args.sure_threshold,
        sure_batches=args.sure_batches,
        sure_lm_head=args.sure_lm_head,
        log_every=args.log_every,
        quant_aware=args.quant_aware,
        quant_aware_weight=args.quant_aware_weight,
    ).validated()
    data = load_data(args.data)  # the whole data set is validated before the model is loaded
    if data.raw_forget is None:
        raise DataError(
            f"data dir '{data.path}' has no raw forget text (looked for {RAW_FORGET_HINT}, or the raw/forget split "
            "of the Hugging Face form); unlearning trains on the forget set's raw text"
        )
    if METHODS[settings.method][1] is not None and data.raw_retain is None:
        raise DataError(
            f"data dir '{data.path}' has no raw retain text (looked for {RAW_RETAIN_HINT}, or the raw/retain1 and "
            f"raw/retain2 splits of the Hugging Face form); method '{settings.method}' regularizes on the retain set's "
            "raw text"
        )

    def progress(line: str) -> None:
        print(line, flush=True)

    result = unlearn(str(target), data, settings, progress=progress)
    save_unlearned(result, out)
    if result.sure is not None:
        print(f"SURE updated {len(result.sure.selected)} of {len(result.sure.saliency)} linear modules", flush=True)
    print(
        f"wrote {out} ({result.steps} steps in {result.seconds:.1f}s; settings and curve in "
        f"{out / 'unlearn_run.json'})",
        flush=True,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover - for running the subcommand alone
    from ..errors import UnlearnAssertError

    _parser = argparse.ArgumentParser(prog="unlearn-assert")
    add_unlearn_parser(_parser.add_subparsers(dest="command", required=True))
    _args = _parser.parse_args()
    try:
        sys.exit(run_unlearn(_args))
    except UnlearnAssertError as _exc:
        print(f"unlearn-assert: error: {_exc}", file=sys.stderr)
        sys.exit(2)
