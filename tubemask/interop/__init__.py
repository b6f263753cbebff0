"""Interoperability: Hugging Face `transformers` VideoMAE models and official VideoMAE V1 / V2 checkpoints.

- [from_hf][tubemask.interop.hf.from_hf] / [to_hf][tubemask.interop.hf.to_hf]: convert to and from
  `transformers.VideoMAEForPreTraining` (and `VideoMAEModel` to tubemask), same numbers both ways.
- [load_official][tubemask.interop.official.load_official]: read an official pretraining checkpoint safely
  (`weights_only=True`), inferring the preset from its tensor shapes.
- [classifier_from_hf][tubemask.interop.hf_classification.classifier_from_hf] /
  [classifier_to_hf][tubemask.interop.hf_classification.classifier_to_hf]: the same for
  `transformers.VideoMAEForVideoClassification`.
- [load_pretrained_encoder][tubemask.interop.finetune_weights.load_pretrained_encoder]: put a tubemask, official
  pretrained or official fine-tuned checkpoint into a classifier for fine-tuning.

`transformers` is optional and imported only when a Hugging Face function is called.
"""

from tubemask.interop.finetune_weights import LoadReport, load_pretrained_encoder
from tubemask.interop.hf import HFEncoderParts, from_hf, to_hf
from tubemask.interop.hf_classification import classifier_from_hf, classifier_to_hf
from tubemask.interop.hf_keys import hf_qv_bias, hf_to_tubemask_state_dict, tubemask_to_hf_state_dict
from tubemask.interop.official import (
    OfficialLayout,
    infer_official_layout,
    load_official,
    official_to_tubemask_state_dict,
    read_official,
    tubemask_to_official_state_dict,
)

__all__ = [
    "HFEncoderParts",
    "LoadReport",
    "classifier_from_hf",
    "classifier_to_hf",
    "load_pretrained_encoder",
    "OfficialLayout",
    "from_hf",
    "hf_qv_bias",
    "hf_to_tubemask_state_dict",
    "infer_official_layout",
    "load_official",
    "official_to_tubemask_state_dict",
    "read_official",
    "to_hf",
    "tubemask_to_hf_state_dict",
    "tubemask_to_official_state_dict",
]
