"""Preference data: validated records, readers for the formats users have, TFDS builders.

``jaxpref.data.tfds`` (TFDS builders) is imported on its own, as it needs the ``data`` extra.
"""

from jaxpref.data.batching import TOKEN_KEYS as TOKEN_KEYS
from jaxpref.data.batching import batch_features as batch_features
from jaxpref.data.batching import bucket_length as bucket_length
from jaxpref.data.batching import collate as collate
from jaxpref.data.batching import length_buckets as length_buckets
from jaxpref.data.formats import FORMATS as FORMATS
from jaxpref.data.formats import Format as Format
from jaxpref.data.formats import UltraFeedbackFormat as UltraFeedbackFormat
from jaxpref.data.formats import detect_format as detect_format
from jaxpref.data.formats import get_format as get_format
from jaxpref.data.iterator import BatchIterator as BatchIterator
from jaxpref.data.pairs import NoisyLabels as NoisyLabels
from jaxpref.data.pairs import OracleLabels as OracleLabels
from jaxpref.data.pairs import RankedPairs as RankedPairs
from jaxpref.data.pairs import inject_label_noise as inject_label_noise
from jaxpref.data.pairs import oracle_pairs as oracle_pairs
from jaxpref.data.pairs import pairs_from_ranked as pairs_from_ranked
from jaxpref.data.readers import ReadResult as ReadResult
from jaxpref.data.readers import ReadStats as ReadStats
from jaxpref.data.readers import iter_records as iter_records
from jaxpref.data.readers import read_json as read_json
from jaxpref.data.readers import read_jsonl as read_jsonl
from jaxpref.data.readers import read_parquet as read_parquet
from jaxpref.data.readers import read_records as read_records
from jaxpref.data.readers import read_rows as read_rows
from jaxpref.data.records import RECORD_KINDS as RECORD_KINDS
from jaxpref.data.records import ROLES as ROLES
from jaxpref.data.records import Conversation as Conversation
from jaxpref.data.records import DataError as DataError
from jaxpref.data.records import Message as Message
from jaxpref.data.records import PairwiseRecord as PairwiseRecord
from jaxpref.data.records import RankedRecord as RankedRecord
from jaxpref.data.records import Record as Record
from jaxpref.data.records import RecordKind as RecordKind
from jaxpref.data.records import Text as Text
from jaxpref.data.records import UnpairedRecord as UnpairedRecord
from jaxpref.data.records import is_conversation as is_conversation
from jaxpref.data.refcache import CacheKey as CacheKey
from jaxpref.data.refcache import attach_reference_logps as attach_reference_logps
from jaxpref.data.refcache import cached_reference_logps as cached_reference_logps
from jaxpref.data.refcache import fingerprint_examples as fingerprint_examples
from jaxpref.data.refcache import fingerprint_params as fingerprint_params
from jaxpref.data.refcache import fingerprint_records as fingerprint_records
from jaxpref.data.refcache import fingerprint_tokenizer as fingerprint_tokenizer
from jaxpref.data.refcache import load_reference_logps as load_reference_logps
from jaxpref.data.refcache import save_reference_logps as save_reference_logps
from jaxpref.data.tokenize import EXCLUSION_REASONS as EXCLUSION_REASONS
from jaxpref.data.tokenize import TokenizeConfig as TokenizeConfig
from jaxpref.data.tokenize import TokenizedDataset as TokenizedDataset
from jaxpref.data.tokenize import TokenizedExample as TokenizedExample
from jaxpref.data.tokenize import TokenizeReport as TokenizeReport
from jaxpref.data.tokenize import tokenize_record as tokenize_record
from jaxpref.data.tokenize import tokenize_records as tokenize_records
from jaxpref.data.validate import REASONS as REASONS
from jaxpref.data.validate import validate_record as validate_record

__all__ = [
    "EXCLUSION_REASONS",
    "FORMATS",
    "REASONS",
    "RECORD_KINDS",
    "ROLES",
    "TOKEN_KEYS",
    "BatchIterator",
    "CacheKey",
    "Conversation",
    "DataError",
    "Format",
    "Message",
    "NoisyLabels",
    "OracleLabels",
    "PairwiseRecord",
    "RankedPairs",
    "RankedRecord",
    "ReadResult",
    "ReadStats",
    "Record",
    "RecordKind",
    "Text",
    "TokenizeConfig",
    "TokenizeReport",
    "TokenizedDataset",
    "TokenizedExample",
    "UltraFeedbackFormat",
    "UnpairedRecord",
    "attach_reference_logps",
    "batch_features",
    "bucket_length",
    "cached_reference_logps",
    "collate",
    "detect_format",
    "fingerprint_examples",
    "fingerprint_params",
    "fingerprint_records",
    "fingerprint_tokenizer",
    "get_format",
    "inject_label_noise",
    "is_conversation",
    "iter_records",
    "length_buckets",
    "load_reference_logps",
    "oracle_pairs",
    "pairs_from_ranked",
    "read_json",
    "read_jsonl",
    "read_parquet",
    "read_records",
    "read_rows",
    "save_reference_logps",
    "tokenize_record",
    "tokenize_records",
    "validate_record",
]
