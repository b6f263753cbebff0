"""`python -m tubemask.extract`: the command line of [`extract`][tubemask.extract.run.extract] (see `--help`)."""

import logging
import sys
from collections.abc import Sequence

from tubemask.data.annotations import AnnotationError
from tubemask.data.decoding import MissingDecoderError
from tubemask.extract.run import SUMMARY_NAME, ExtractConfig, extract

__all__ = ["main"]

_DESCRIPTION = (
    "Slide a clip window over every video of a folder or list file and save one feature vector per window: "
    "<output-dir>/<relative path>.npy holds float32 [num_windows, d]; <output-dir>/summary.json names the videos "
    "done, skipped (features existed: a rerun resumes) and failed (with the reason)."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line into an [ExtractConfig][tubemask.extract.run.ExtractConfig] with tyro and extract.

    Returns:
        0 when the run finished (bad videos are skipped and named, not an error), 2 for bad settings, a missing input
        or checkpoint, or no video decoder.
    """
    try:
        import tyro
    except ImportError:
        print("python -m tubemask.extract needs `tyro` (pip install 'tubemask[recipes]' or pip install tyro)")
        return 2
    cfg = tyro.cli(ExtractConfig, args=argv, prog="python -m tubemask.extract", description=_DESCRIPTION)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        summary = extract(cfg)
    except (FileNotFoundError, ValueError, AnnotationError, MissingDecoderError, ImportError) as error:
        print(f"python -m tubemask.extract: error: {error}", file=sys.stderr)
        return 2
    print(
        f"{summary.count('extracted')} videos extracted, {summary.count('skipped')} skipped (features existed), "
        f"{len(summary.failed)} failed; {len(summary.short)} shorter than a window; feature width "
        f"{summary.feature_dim}; see {summary.output_dir}/{SUMMARY_NAME}"
    )
    for bad in summary.failed:
        print(f"  failed: {bad['path']}: {bad['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
