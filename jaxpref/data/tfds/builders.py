"""TFDS builders for public preference data sets and a synthetic one, stored as array_record.

The builders write ``array_record`` files (the default here) and are read back with
``tfds.data_source`` (random access) and grain, with no TensorFlow installed. The public
release files are read from a local folder (``manual_dir``), parsed by the jaxpref readers
(:mod:`jaxpref.data.readers`) and validated; malformed rows are skipped, counted by reason,
logged, and the counts stored in the dataset's metadata (``builder.info.metadata["splits"]``:
``{split: {"rows", "records", "skipped": {reason: count}}}``).

=============================  =========================================  ===================
builder (configs)              files in ``manual_dir``                     records
=============================  =========================================  ===================
``jaxpref_hh_rlhf``            ``[<subset>/]{train,test}.jsonl[.gz]``      pairwise,
(``all``, ``helpful-base``,    (Anthropic's release: one folder per        conversational
``helpful-online``,            subset; ``all`` reads every folder found)   prompt
``helpful-rejection-sampled``,
``harmless-base``)
``jaxpref_ultrafeedback``      ``**/*.jsonl[.gz]``, ``**/*.parquet``        pairwise (best vs
(``binarized``, ``ranked``)    (openbmb's rows: instruction, completions)  worst) or ranked
``jaxpref_shp``                ``**/{train,validation,test}.json[l]``      pairwise + scores
                               (Stanford SHP: one folder per domain)
``jaxpref_synthetic``          none: generated (arithmetic questions)      per config
(``pairwise``, ``ranked``,
``unpaired``)
=============================  =========================================  ===================

Example::

    import tensorflow_datasets as tfds
    from jaxpref.data.tfds import HhRlhf, example_to_record

    builder = HhRlhf(config="helpful-base", data_dir="~/tfds")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="~/hh-rlhf"))
    source = tfds.data_source("jaxpref_hh_rlhf/helpful-base", split="train",
                              data_dir="~/tfds")
    record = example_to_record(source[0])
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxpref.data.formats import Format, UltraFeedbackFormat
from jaxpref.data.readers import ReadStats, iter_records
from jaxpref.data.records import (
    DataError,
    PairwiseRecord,
    RankedRecord,
    Record,
    RecordKind,
    UnpairedRecord,
)
from jaxpref.data.tfds.features import features_for, record_to_example
from jaxpref.data.validate import validate_record

logger = logging.getLogger(__name__)

_VERSION = tfds.core.Version("1.0.0")
_RELEASE_NOTES = {"1.0.0": "Initial release."}


@dataclasses.dataclass(eq=False)
class RecordConfig(tfds.core.BuilderConfig):
    """A config naming the record kind it builds and, optionally, a subset folder."""

    kind: RecordKind = "pairwise"
    subset: str | None = None


class _RecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared machinery: features from the record kind, array_record by default, stats."""

    VERSION = _VERSION
    RELEASE_NOTES = _RELEASE_NOTES
    DESCRIPTION: ClassVar[str] = ""
    HOMEPAGE: ClassVar[str | None] = None
    CITATION: ClassVar[str] = ""

    def __init__(self, *, file_format: str | None = "array_record", **kwargs: Any) -> None:
        super().__init__(file_format=file_format, **kwargs)

    @property
    def kind(self) -> RecordKind:
        """The record kind this builder (config) produces."""
        return self.builder_config.kind

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=features_for(self.kind),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            metadata=tfds.core.MetadataDict(splits={}),
        )

    def _record_stats(self, split: str, stats: Sequence[ReadStats], unsupported: int) -> None:
        skipped: Counter[str] = Counter()
        for s in stats:
            skipped.update(s.skipped)
        if unsupported:
            skipped["unsupported"] += unsupported
        entry = {
            "rows": sum(s.rows for s in stats),
            "records": sum(s.records for s in stats) - unsupported,
            "skipped": dict(skipped),
        }
        self.info.metadata["splits"][split] = entry
        log = logger.warning if skipped else logger.info
        log("%s/%s: %s", self.name, split, entry)


class _FileBuilder(_RecordBuilder, skip_registration=True):
    """A builder over release files in ``manual_dir``, read by a jaxpref format."""

    FORMAT: ClassVar[str | Format]

    def _format(self) -> str | Format:
        return self.FORMAT

    def _files(self, root: str) -> dict[str, list[str]]:
        """Split name -> files under ``root`` (only splits that have files)."""
        raise NotImplementedError

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = os.fspath(dl_manager.manual_dir)
        files = self._files(root)
        if not files:
            raise FileNotFoundError(
                f"no {self.name} files in {root}. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        return {split: self._generate_examples(root, split, p) for split, p in files.items()}

    def _generate_examples(
        self, root: str, split: str, paths: list[str]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        all_stats, unsupported = [], 0
        for path in paths:
            stats = ReadStats(path)
            all_stats.append(stats)
            records = iter_records(
                path, kind=self.kind, format=self._format(), skip_invalid=True, stats=stats
            )
            for record in records:
                source = os.path.relpath(path, root) + record.source[len(path) :]
                try:
                    example = record_to_example(record, source=source)
                except DataError as err:
                    unsupported += 1
                    logger.debug("skipped (unsupported) %s: %s", source, err)
                    continue
                yield source, example
        self._record_stats(split, all_stats, unsupported)
        if sum(s.records for s in all_stats) == unsupported:
            summaries = "; ".join(s.summary() for s in all_stats)
            raise DataError(f"no valid records for split {split!r}: {summaries}")


def _find(root: str, names: Sequence[str], *, recursive: bool = True) -> list[str]:
    """Files under ``root`` whose base name is in ``names``, sorted."""
    found = []
    for folder, _, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files if f in names]
        if not recursive:
            break
    return sorted(found)


def _with_suffixes(stem: str, suffixes: Sequence[str]) -> list[str]:
    return [stem + s for s in suffixes]


_JSONL = (".jsonl", ".jsonl.gz")


class HhRlhf(_FileBuilder):
    """Anthropic HH-RLHF (helpfulness and harmlessness preference transcripts).

    Each row's ``chosen`` and ``rejected`` transcripts share all turns but the last, which
    become a conversational prompt; the last Assistant turns are the two responses.
    """

    name = "jaxpref_hh_rlhf"
    FORMAT = "hh_rlhf"
    SUBSETS = ("helpful-base", "helpful-online", "helpful-rejection-sampled", "harmless-base")
    BUILDER_CONFIGS: ClassVar[list[RecordConfig]] = [
        RecordConfig(name="all", description="Every subset found in manual_dir."),
        *(RecordConfig(name=s, subset=s, description=f"The {s} subset.") for s in SUBSETS),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put Anthropic's HH-RLHF release in manual_dir: <subset>/train.jsonl.gz and "
        "<subset>/test.jsonl.gz for each subset (helpful-base, harmless-base, ...), or "
        "train.jsonl[.gz] / test.jsonl[.gz] at the top."
    )
    DESCRIPTION = "Anthropic HH-RLHF preference pairs as jaxpref records."
    HOMEPAGE = "https://github.com/anthropics/hh-rlhf"
    CITATION = (
        "Bai et al., Training a Helpful and Harmless Assistant with Reinforcement Learning "
        "from Human Feedback, 2022, arXiv:2204.05862"
    )

    def _files(self, root: str) -> dict[str, list[str]]:
        subset = self.builder_config.subset
        if subset is not None:
            root = os.path.join(root, subset)
        splits = {s: _find(root, _with_suffixes(s, _JSONL)) for s in ("train", "test")}
        return {split: paths for split, paths in splits.items() if paths}


class UltraFeedback(_FileBuilder):
    """UltraFeedback (openbmb): prompts with several rated completions.

    ``ranked`` keeps every completion with its ``overall_score``; ``binarized`` keeps the
    best against the worst (see :class:`~jaxpref.data.UltraFeedbackFormat`; rows whose
    completions all tie are dropped and counted under ``"tie"``).
    """

    name = "jaxpref_ultrafeedback"
    BUILDER_CONFIGS: ClassVar[list[RecordConfig]] = [
        RecordConfig(
            name="binarized",
            kind="pairwise",
            description="Best vs worst completion by overall_score; ties dropped, counted.",
        ),
        RecordConfig(name="ranked", kind="ranked", description="All completions, scored."),
    ]
    FORMAT = UltraFeedbackFormat()
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the UltraFeedback release rows (*.jsonl[.gz] or *.parquet, any folder layout) "
        "in manual_dir; everything found becomes the train split."
    )
    DESCRIPTION = "UltraFeedback rated completions as ranked lists or binarised pairs."
    HOMEPAGE = "https://github.com/OpenBMB/UltraFeedback"
    CITATION = (
        "Cui et al., UltraFeedback: Boosting Language Models with Scaled AI Feedback, 2023, "
        "arXiv:2310.01377"
    )

    def _files(self, root: str) -> dict[str, list[str]]:
        paths = []
        for folder, _, files in os.walk(root):
            paths += [os.path.join(folder, f) for f in files if f.endswith((*_JSONL, ".parquet"))]
        return {"train": sorted(paths)} if paths else {}


class Shp(_FileBuilder):
    """Stanford Human Preferences: Reddit comment pairs with vote-derived labels and scores."""

    name = "jaxpref_shp"
    FORMAT = "shp"
    BUILDER_CONFIGS: ClassVar[list[RecordConfig]] = [
        RecordConfig(name="default", description="Every domain found in manual_dir.")
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the SHP release in manual_dir: <domain>/train.json, <domain>/validation.json, "
        "<domain>/test.json (JSON lines; .jsonl and .gz also accepted)."
    )
    DESCRIPTION = "Stanford Human Preferences (SHP) pairs with their Reddit scores."
    HOMEPAGE = "https://huggingface.co/datasets/stanfordnlp/SHP"
    CITATION = (
        "Ethayarajh et al., Understanding Dataset Difficulty with V-Usable Information, "
        "2022, arXiv:2110.08420"
    )

    def _files(self, root: str) -> dict[str, list[str]]:
        suffixes = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
        splits = {
            s: _find(root, _with_suffixes(s, suffixes)) for s in ("train", "validation", "test")
        }
        return {split: paths for split, paths in splits.items() if paths}


class Synthetic(_RecordBuilder):
    """Arithmetic questions with a correct and wrong answers; needs no files.

    A response's score is minus its absolute error; pairwise strength is the Bradley-Terry
    probability ``sigmoid(score_chosen - score_rejected)`` and the margin that score gap.
    Deterministic: the same examples on every build.
    """

    name = "jaxpref_synthetic"
    BUILDER_CONFIGS: ClassVar[list[RecordConfig]] = [
        RecordConfig(name=k, kind=k, description=f"{k} records.")
        for k in ("pairwise", "ranked", "unpaired")
    ]
    SIZES: ClassVar[dict[str, int]] = {"train": 64, "test": 16}
    DESCRIPTION = "Synthetic arithmetic preference data for tests and examples."

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager
        return {
            split: self._generate_examples(split, seed, size)
            for seed, (split, size) in enumerate(self.SIZES.items())
        }

    def _generate_examples(
        self, split: str, seed: int, size: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        rng = np.random.default_rng(seed)
        for i in range(size):
            record = validate_record(_synthetic_record(self.kind, rng, f"{split}:{i}"))
            yield f"{split}:{i}", record_to_example(record)
        stats = ReadStats(split, format="synthetic", rows=size, records=size)
        self._record_stats(split, [stats], 0)


def _synthetic_record(kind: RecordKind, rng: np.random.Generator, source: str) -> Record:
    a, b = (int(x) for x in rng.integers(0, 50, size=2))
    prompt, answer = f"What is {a} + {b}?", a + b
    offsets = [0, *(int(x) for x in rng.choice([-3, -2, -1, 1, 2, 3, 4], 3, replace=False))]
    if kind == "pairwise":
        error = abs(offsets[1])
        return PairwiseRecord(
            prompt,
            str(answer),
            str(answer + offsets[1]),
            strength=1.0 / (1.0 + math.exp(-error)),
            margin=float(error),
            chosen_score=0.0,
            rejected_score=-float(error),
            source=source,
        )
    if kind == "ranked":
        order = rng.permutation(len(offsets))
        responses = tuple(str(answer + offsets[j]) for j in order)
        scores = tuple(float(-abs(offsets[j])) for j in order)
        ranking = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
        ranks = tuple(ranking.index(j) for j in range(len(scores)))
        return RankedRecord(prompt, responses, scores=scores, ranks=ranks, source=source)
    desirable = bool(rng.integers(2))
    completion = str(answer if desirable else answer + offsets[1])
    return UnpairedRecord(prompt, completion, desirable, source=source)
