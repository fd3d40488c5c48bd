"""TFDS builders (array_record, no TensorFlow needed) and record <-> example conversion.

Importing this package imports ``tensorflow_datasets`` (the ``data`` extra) and registers
the builders ``jaxpref_hh_rlhf``, ``jaxpref_ultrafeedback``, ``jaxpref_shp`` and
``jaxpref_synthetic`` with TFDS, so ``tfds.data_source("jaxpref_shp", ...)`` finds them.
"""

from jaxpref.data.tfds.builders import HhRlhf as HhRlhf
from jaxpref.data.tfds.builders import RecordConfig as RecordConfig
from jaxpref.data.tfds.builders import Shp as Shp
from jaxpref.data.tfds.builders import Synthetic as Synthetic
from jaxpref.data.tfds.builders import UltraFeedback as UltraFeedback
from jaxpref.data.tfds.features import example_to_record as example_to_record
from jaxpref.data.tfds.features import features_for as features_for
from jaxpref.data.tfds.features import record_dataset as record_dataset
from jaxpref.data.tfds.features import record_to_example as record_to_example

__all__ = [
    "HhRlhf",
    "RecordConfig",
    "Shp",
    "Synthetic",
    "UltraFeedback",
    "example_to_record",
    "features_for",
    "record_dataset",
    "record_to_example",
]
