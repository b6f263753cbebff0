"""Whole-video feature extraction: slide a clip window over every video and save one feature vector per window.

```
python -m tubemask.extract --videos videos/ --checkpoint vit_b_k400_ft.pth --output-dir features/
```

writes `features/<relative path>.npy`, float32 `[num_windows, d]` per video, and `features/summary.json`; see the
guide page (`docs/extract.md`) for the options and the output layout. The pieces, one concept per module:

- [`tubemask.extract.windows`][]: where the windows of a video start and which frames they read (pure functions);
- [`tubemask.extract.feature_model`][]: the window-to-feature model built from a tubemask, official VideoMAE or
  Hugging Face checkpoint, and how it pools;
- [`tubemask.extract.inputs`][]: the videos of a folder or list file and the relative path each one's features mirror;
- [`tubemask.extract.video`][]: one open video to its `[num_windows, d]` features;
- [`tubemask.extract.run`][]: the settings and the resumable loop over all videos, with its summary.
"""

from tubemask.extract.feature_model import CheckpointInfo, ClipFeatureModel, PooledFeature, load_feature_model
from tubemask.extract.inputs import list_videos
from tubemask.extract.run import ExtractConfig, ExtractSummary, extract
from tubemask.extract.video import extract_video
from tubemask.extract.windows import num_windows, window_indices, window_starts

__all__ = [
    "CheckpointInfo",
    "ClipFeatureModel",
    "ExtractConfig",
    "ExtractSummary",
    "PooledFeature",
    "extract",
    "extract_video",
    "list_videos",
    "load_feature_model",
    "num_windows",
    "window_indices",
    "window_starts",
]
