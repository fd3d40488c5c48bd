"""Read preference records from JSONL, JSON and Parquet files.

Every reader returns a :class:`ReadResult`: the validated records plus ``skipped``, a
``Counter`` of dropped rows by reason (see :data:`jaxpref.data.validate.REASONS`), always
present, empty when nothing was dropped. By default the first malformed row raises
:class:`~jaxpref.data.DataError`, whose message names the file, the line (or row), the
field and the problem::

    train.jsonl, line 7, field 'chosen': empty text

With ``skip_invalid=True`` malformed rows are skipped instead and counted by reason. Rows a
format drops by policy (UltraFeedback ties) are counted the same way in either mode. Each
skip is logged on the ``jaxpref.data.readers`` logger (the first few per reason at WARNING,
the rest at DEBUG) and one summary line closes every file (WARNING if anything was skipped,
INFO otherwise).

Some problems stop the read even with ``skip_invalid``: an unknown ``format`` or a format
that cannot give the requested ``kind``, a file that is not Parquet, and a syntax error or
non-UTF-8 byte inside a JSON array file (after which no later record can be located).

Files ending in ``.gz`` are decompressed. Blank lines in JSONL files are ignored.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from jaxpref.data.formats import Format, RowDropped, detect_format, get_format
from jaxpref.data.records import RECORD_KINDS, DataError, Record, RecordKind

logger = logging.getLogger(__name__)

_LOG_FIRST = 5  # skips logged at WARNING per reason; later ones at DEBUG

PathLike = str | os.PathLike[str]
# One parsed row: (1-based line, 0-based row index (JSON arrays, Parquet), the value or the
# error). Line or row is None when the container has no such notion.
_Row = tuple[int | None, int | None, Any]


@dataclasses.dataclass
class ReadStats:
    """Counts for one read, filled in while records stream out of :func:`iter_records`.

    Attributes:
        path: the file (or the ``source`` name of in-memory rows).
        format: the format used (detected or given); ``None`` until a row was recognised.
        rows: rows seen (non-blank lines, array elements, table rows).
        records: records produced.
        skipped: dropped rows by reason.
        examples: the first error message for each reason, to see what went wrong.
    """

    path: str
    format: str | None = None
    rows: int = 0
    records: int = 0
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """One line: records read, rows skipped by reason."""
        line = f"{self.path}: {self.records} records from {self.rows} rows"
        if self.format is not None:
            line += f" (format {self.format})"
        if self.skipped:
            reasons = ", ".join(f"{r}={n}" for r, n in self.skipped.most_common())
            line += f"; skipped {self.skipped.total()}: {reasons}"
        return line


@dataclasses.dataclass(frozen=True)
class ReadResult(Sequence[Record]):
    """The records read from one file and what was skipped.

    A sequence of records (``len``, indexing, iteration) that also carries the counts.

    Attributes:
        records: the validated records, in file order.
        stats: the :class:`ReadStats` of the read.
    """

    records: tuple[Record, ...]
    stats: ReadStats

    @property
    def skipped(self) -> Counter[str]:
        """Dropped rows by reason (empty when nothing was dropped)."""
        return self.stats.skipped

    @property
    def format(self) -> str | None:
        """The format used (detected or given)."""
        return self.stats.format

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Record, ...]: ...
    def __getitem__(self, index: int | slice) -> Record | tuple[Record, ...]:
        return self.records[index]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)


def _open(path: PathLike) -> Any:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _utf8_error(err: UnicodeDecodeError, line: int | None = None) -> DataError:
    """The error for bytes that are not UTF-8, naming the JSON field that holds them if any."""
    bad = err.object[err.start : err.start + 1].hex()
    field = None
    try:  # Undecodable bytes become lone surrogates; find the string holding one.
        field = _surrogate_field(json.loads(err.object.decode("utf-8", "surrogateescape")))
    except ValueError:
        pass
    return DataError(
        f"not valid UTF-8: byte 0x{bad} at byte offset {err.start}",
        line=line,
        field=field,
        reason="non_utf8",
    )


def _surrogate_field(value: Any, prefix: str = "") -> str | None:
    if isinstance(value, str):
        return (prefix or "(value)") if any("\udc80" <= c <= "\udcff" for c in value) else None
    items: Iterable[tuple[str, Any]] = ()
    if isinstance(value, dict):
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(value))
    for name, item in items:
        found = _surrogate_field(item, name)
        if found is not None:
            return found
    return None


def _jsonl_rows(path: PathLike) -> Iterator[_Row]:
    with _open(path) as f:
        for line, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield line, None, _utf8_error(err)
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                value = DataError(
                    f"invalid JSON: {err.msg} (column {err.colno})", reason="invalid_json"
                )
            yield line, None, value


def _json_rows(path: PathLike) -> Iterator[_Row]:
    with _open(path) as f:
        head = b""
        while not head.removeprefix(codecs.BOM_UTF8).strip() and (chunk := f.read(4096)):
            head += chunk
        if not head.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"["):
            array = False
        else:
            array, data = True, head + f.read()
    if not array:
        yield from _jsonl_rows(path)  # JSON Lines saved as .json (e.g. Stanford SHP)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _utf8_error(err, data.count(b"\n", 0, err.start) + 1).locate(path=str(path)) from None
    decoder = json.JSONDecoder()
    pos, line, counted, row = text.index("[") + 1, 1, 0, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if text.startswith("]", pos) and row == 0:
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(
                f"invalid JSON: {err.msg} (column {err.colno})",
                path=str(path),
                line=err.lineno,
                row=row,
                reason="invalid_json",
            ) from None
        yield line, row, value
        row += 1
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if text.startswith("]", pos):
            return
        if not text.startswith(",", pos):
            raise DataError(
                "invalid JSON: expected ',' or ']' after an array element",
                path=str(path),
                line=text.count("\n", 0, pos) + 1,
                reason="invalid_json",
            )
        pos += 1


def _parquet_rows(path: PathLike) -> Iterator[_Row]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading Parquet needs pyarrow: pip install 'jaxpref[data]'") from err
    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        message = f"not a Parquet file: {err}"
        raise DataError(message, path=str(path), reason="invalid_file") from None
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for value in batch.to_pylist():
            yield None, row, value
            row += 1


def _container(path: PathLike) -> Callable[[PathLike], Iterator[_Row]]:
    name = os.fspath(path).lower().removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        return _parquet_rows
    if name.endswith(".json"):
        return _json_rows
    return _jsonl_rows


def _check_kind(kind: str, fmt: Format, detected: bool) -> None:
    if kind not in RECORD_KINDS:
        raise DataError(
            f"unknown kind {kind!r}; expected one of {', '.join(RECORD_KINDS)}",
            reason="wrong_kind",
        )
    if kind not in fmt.kinds:
        how = "detected format" if detected else "format"
        raise DataError(
            f"{how} {fmt.name!r} gives {' or '.join(fmt.kinds)} records, not {kind!r}",
            reason="wrong_kind",
        )


def _records(
    rows: Iterable[_Row],
    *,
    name: str,
    kind: RecordKind,
    format: str | Format,
    skip_invalid: bool,
    stats: ReadStats,
) -> Iterator[Record]:
    """Parse ``rows`` into records, counting skips in ``stats``; ``name`` labels sources."""

    def source(line: int | None, row: int | None) -> str:
        return f"{name}:{line}" if line is not None else f"{name}[{row}]"

    fmt = None
    try:
        if format != "auto":
            fmt = get_format(format)
            _check_kind(kind, fmt, detected=False)
            stats.format = fmt.name
        elif kind not in RECORD_KINDS:
            _check_kind(kind, get_format("jaxpref"), detected=False)
    except DataError as err:
        raise err.locate(path=name) from None
    for line, row, value in rows:
        stats.rows += 1

        def fail(err: DataError, line: int | None = line, row: int | None = row) -> None:
            err = err.locate(path=name, line=line, row=row)
            if not skip_invalid:
                raise err from None
            _skip(stats, err.reason, str(err))

        try:
            if isinstance(value, DataError):
                raise value
            if not isinstance(value, Mapping):
                raise DataError(
                    f"expected a JSON object, got {type(value).__name__}", reason="wrong_type"
                )
            found = fmt if fmt is not None else detect_format(value)
        except DataError as err:
            fail(err)
            continue
        if fmt is None:  # The first recognised row fixes the format for the whole file.
            try:
                _check_kind(kind, found, detected=True)
            except DataError as err:  # a wrong kind for the file: no row could be read
                raise err.locate(path=name, line=line, row=row) from None
            fmt, stats.format = found, found.name
        try:
            records = fmt.parse(value, kind=kind, source=source(line, row), index=stats.rows - 1)
        except RowDropped as drop:
            _skip(stats, drop.reason, f"{source(line, row)}: {drop}")
            continue
        except DataError as err:
            fail(err)
            continue
        stats.records += len(records)
        yield from records
    log = logger.warning if stats.skipped else logger.info
    log("%s", stats.summary())


def _skip(stats: ReadStats, reason: str, message: str) -> None:
    stats.skipped[reason] += 1
    stats.examples.setdefault(reason, message)
    level = logging.WARNING if stats.skipped[reason] <= _LOG_FIRST else logging.DEBUG
    logger.log(level, "skipped (%s) %s", reason, message)


def iter_records(
    path: PathLike,
    *,
    kind: RecordKind = "pairwise",
    format: str | Format = "auto",
    skip_invalid: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Record]:
    """Stream validated records from a JSONL, JSON or Parquet file (chosen by suffix).

    ``.parquet``/``.pq`` is Parquet; ``.json`` is a JSON array (or JSON Lines if the file
    does not start with ``[``); anything else is JSON Lines. A ``.gz`` suffix is ignored
    for the choice (gzip is detected from the bytes).

    Args:
        path: the file.
        kind: the records wanted: ``"pairwise"``, ``"ranked"`` or ``"unpaired"``.
        format: ``"auto"`` (detect from the first recognisable row's fields), a name in
            :data:`jaxpref.data.FORMATS` (``standard``, ``conversational``,
            ``implicit_prompt``, ``hh_rlhf``, ``ultrafeedback``, ``shp``, ``jaxpref``), or a
            format object such as ``UltraFeedbackFormat(policy="best_vs_random")``.
        skip_invalid: skip malformed rows (counted in ``stats.skipped``) instead of raising.
        stats: a :class:`ReadStats` to fill in; counts are final once the iterator is
            exhausted.

    Yields:
        Validated records, in file order.

    Raises:
        DataError: on the first malformed row (unless ``skip_invalid``), or on a problem
            that stops the read (see the module docstring).
    """
    name = os.fspath(path)
    stats = stats if stats is not None else ReadStats(name)
    rows = _container(path)(path)
    return _records(
        rows, name=name, kind=kind, format=format, skip_invalid=skip_invalid, stats=stats
    )


def read_records(
    path: PathLike,
    *,
    kind: RecordKind = "pairwise",
    format: str | Format = "auto",
    skip_invalid: bool = False,
) -> ReadResult:
    """All records of a file as a :class:`ReadResult`; arguments as :func:`iter_records`."""
    rows = _container(path)(path)
    return _collect(rows, path, kind=kind, format=format, skip_invalid=skip_invalid)


def read_jsonl(
    path: PathLike,
    *,
    kind: RecordKind = "pairwise",
    format: str | Format = "auto",
    skip_invalid: bool = False,
) -> ReadResult:
    """Records from a JSON Lines file (optionally gzipped); see :func:`iter_records`.

    Errors name the 1-based line.

    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "pairs.jsonl")
    >>> with open(path, "w") as f:
    ...     print(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}), file=f)
    ...     print(json.dumps({"prompt": "3+3?", "chosen": "6", "rejected": ""}), file=f)
    >>> result = read_jsonl(path, skip_invalid=True)
    >>> result.records[0].chosen, result.format, dict(result.skipped)
    ('4', 'standard', {'empty_text': 1})
    """
    return _collect(_jsonl_rows(path), path, kind=kind, format=format, skip_invalid=skip_invalid)


def read_json(
    path: PathLike,
    *,
    kind: RecordKind = "pairwise",
    format: str | Format = "auto",
    skip_invalid: bool = False,
) -> ReadResult:
    """Records from a JSON file holding an array of row objects; see :func:`iter_records`.

    Errors name the line where the offending element starts and its 0-based row index. A
    file that does not start with ``[`` is read as JSON Lines.
    """
    return _collect(_json_rows(path), path, kind=kind, format=format, skip_invalid=skip_invalid)


def read_parquet(
    path: PathLike,
    *,
    kind: RecordKind = "pairwise",
    format: str | Format = "auto",
    skip_invalid: bool = False,
) -> ReadResult:
    """Records from a Parquet file (one row per record); see :func:`iter_records`.

    Errors name the 0-based row; records' ``source`` is ``"path[row]"``. Nested columns
    (lists of ``{"role", "content"}`` structs) hold conversations.
    """
    return _collect(_parquet_rows(path), path, kind=kind, format=format, skip_invalid=skip_invalid)


def read_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    kind: RecordKind = "pairwise",
    format: str | Format = "auto",
    skip_invalid: bool = False,
    source: str = "<rows>",
) -> ReadResult:
    """Records from in-memory rows (e.g. a Hugging Face ``datasets.Dataset``).

    Errors and records' ``source`` name ``source`` and the 0-based row.

    >>> result = read_rows([{"prompt": "Hi", "completion": "Hello!", "label": True}],
    ...                    kind="unpaired")
    >>> result[0].desirable, result.skipped
    (True, Counter())
    """
    indexed = ((None, i, row) for i, row in enumerate(rows))
    return _collect(indexed, source, kind=kind, format=format, skip_invalid=skip_invalid)


def _collect(rows: Iterable[_Row], path: PathLike, **options: Any) -> ReadResult:
    stats = ReadStats(os.fspath(path))
    records = tuple(_records(rows, name=stats.path, stats=stats, **options))
    return ReadResult(records, stats)
