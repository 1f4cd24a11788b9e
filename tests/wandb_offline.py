"""Read the history of an offline W&B run straight from its `.wandb` file (no server needed).

The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
chunks, each with a 7-byte header (crc32c, length, type: full / first / middle / last) and a
piece of a serialised `Record` protobuf. History records hold one logged row each.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(data: bytes) -> list[bytes]:
    """Reassemble the serialised records from the chunked log."""
    ident, _magic, _version = FILE_HEADER.unpack_from(data)
    if ident != b":W&B":
        raise ValueError("not a W&B transaction log")
    records, pending, pos = [], b"", FILE_HEADER.size
    while pos + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER.size:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        pos += CHUNK_HEADER.size
        if kind == 0 and length == 0:  # zero padding at the end of a block or file
            pos += left_in_block - CHUNK_HEADER.size
            continue
        piece = data[pos : pos + length]
        pos += length
        if kind == FULL:
            records.append(piece)
        elif kind == FIRST:
            pending = piece
        elif kind == MIDDLE:
            pending += piece
        elif kind == LAST:
            records.append(pending + piece)
            pending = b""
    return records


def offline_run_file(run_root: Path) -> Path:
    """The `.wandb` file of the (single) offline run under a run folder."""
    files = sorted(Path(run_root).glob("**/offline-run-*/run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no offline W&B run under {run_root}")
    return files[-1]


def read_history(wandb_file: Path) -> list[dict]:
    """Every logged history row as a dict of key -> value."""
    rows = []
    for raw in _records(Path(wandb_file).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows
