"""A readable copy of a damaged MCAP file: what a recorder killed mid-write or a bad disk leaves behind.

rosbags stops at the first record it cannot read. ``repair_mcap`` walks the file's top-level records
instead and writes a copy that rosbags reads to the end: intact chunks byte for byte, damaged chunks
(their data does not decompress or fails its CRC) left out and counted, with the messages their
message indexes list; a chunk cut off by the end of the file gives the complete records before the
cut (its schemas, channels and first messages, unchunked). The copy is closed with an empty summary,
so rosbags scans it.
"""

from __future__ import annotations

import mmap
import struct
from binascii import crc32
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"\x89MCAP0\r\n"
HEADER, FOOTER, CHUNK, MESSAGE_INDEX, DATA_END = 0x01, 0x02, 0x06, 0x07, 0x0F
RECORD_HEAD = 9  # opcode (1 byte) and content length (8 bytes)
CHUNK_FIXED = 28  # message start and end time, uncompressed size (8 bytes each), uncompressed CRC (4)


class McapRepairError(ValueError):
    """Nothing in the file is an MCAP record: it is not an MCAP file, or it is damaged from its start."""


class DamagedChunkError(ValueError):
    """A chunk whose data does not decompress, or decompresses to the wrong size or CRC."""


@dataclass
class McapRepair:
    """The readable copy and what could not be copied into it."""

    path: Path
    truncated_at: int | None = None  # the file ends inside the record that starts at this offset
    damaged_chunks: int = 0  # chunks left out
    messages_in_damaged_chunks: int = 0  # as their message indexes list them (0 when those are lost too)
    records_from_cut_chunk: int = 0  # complete records taken from the chunk the file's end cuts through

    def describe(self, name: str) -> list[str]:
        """One warning per kind of damage, for the reader's warnings (report.json and stderr)."""
        warnings = []
        if self.truncated_at is not None:
            warnings.append(f"{name} is truncated at byte {self.truncated_at} (a recorder killed mid-write?): "
                            f"read the complete records before the cut ({self.records_from_cut_chunk} of them "
                            "from the chunk it cuts through)")
        if self.damaged_chunks:
            warnings.append(f"{name}: skipped {self.damaged_chunks} damaged chunk(s) holding "
                            f"{self.messages_in_damaged_chunks} message(s), read on past them")
        return warnings


def _decompress(data: bytes, compression: str, partial: bool) -> bytes:
    """``data`` decompressed; with ``partial`` a cut-off stream gives what precedes the cut."""
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # Python 3.14
        except ImportError:
            from backports import zstd  # what rosbags itself uses before 3.14
        return zstd.ZstdDecompressor().decompress(data) if partial else zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor().decompress(data) if partial else lz4.frame.decompress(data)
    raise DamagedChunkError(f"unknown chunk compression {compression!r}")


def _chunk_data(content: bytes, partial: bool = False) -> bytes:
    """The records of a chunk record's content, decompressed and checked; DamagedChunkError when bad."""
    try:
        _, _, size, crc = struct.unpack_from("<QQQI", content, 0)
        (name_length,) = struct.unpack_from("<I", content, CHUNK_FIXED)
        compression = content[CHUNK_FIXED + 4 : CHUNK_FIXED + 4 + name_length].decode()
        offset = CHUNK_FIXED + 4 + name_length
        (compressed_size,) = struct.unpack_from("<Q", content, offset)
        compressed = content[offset + 8 : offset + 8 + compressed_size]
        records = _decompress(compressed, compression, partial)
    except DamagedChunkError:
        raise
    except Exception as error:  # struct, Unicode, zstd and lz4 errors alike: the chunk is unreadable
        raise DamagedChunkError(f"{type(error).__name__}: {error}") from error
    if not partial and (len(records) != size or (crc and crc32(records) != crc)):
        raise DamagedChunkError("its data fails its size or CRC check")
    return records


def _complete_records(data: bytes) -> list[bytes]:
    """The whole records at the start of ``data`` (a cut-off chunk's records)."""
    records, position = [], 0
    while position + RECORD_HEAD <= len(data):
        (length,) = struct.unpack_from("<Q", data, position + 1)
        end = position + RECORD_HEAD + length
        if end > len(data):
            break
        records.append(data[position:end])
        position = end
    return records


def repair_mcap(path: Path, folder: Path) -> McapRepair:
    """Write the readable copy of the MCAP file ``path`` into ``folder``; McapRepairError if nothing is readable."""
    repair = McapRepair(folder / path.name)
    with path.open("rb") as source, repair.path.open("wb") as copy:
        if path.stat().st_size == 0:
            raise McapRepairError(f"{path} is empty")
        data = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if data[: len(MAGIC)] != MAGIC:
                raise McapRepairError(f"{path} is not an MCAP file (its first bytes are not the MCAP magic)")
            copy.write(MAGIC)
            _copy_records(data, copy, repair)
        finally:
            data.close()
        copy.write(struct.pack("<BQI", DATA_END, 4, 0))
        copy.write(struct.pack("<BQQQI", FOOTER, 20, 0, 0, 0))
        copy.write(MAGIC)
    return repair


def _copy_records(data: mmap.mmap, copy: BinaryIO, repair: McapRepair) -> None:
    """Copy the data section's records up to its end, the footer or the cut; see the module docstring."""
    position = len(MAGIC)
    after_damaged_chunk = False  # message indexes follow their chunk: those of a skipped one count its messages
    while position < len(data):
        if position + RECORD_HEAD > len(data):
            repair.truncated_at = position
            return
        opcode = data[position]
        (length,) = struct.unpack_from("<Q", data, position + 1)
        if opcode in (DATA_END, FOOTER):
            return
        end = position + RECORD_HEAD + length
        if end > len(data):
            repair.truncated_at = position
            if opcode == CHUNK:
                _copy_cut_chunk(data[position + RECORD_HEAD :], copy, repair)
            return
        if opcode == CHUNK:
            after_damaged_chunk = not _chunk_is_sound(data[position + RECORD_HEAD : end])
            repair.damaged_chunks += after_damaged_chunk
            if not after_damaged_chunk:
                copy.write(data[position:end])
        elif opcode == MESSAGE_INDEX:  # not copied: the copy has no chunk indexes for them to serve
            if after_damaged_chunk and length >= 6:
                (entries_size,) = struct.unpack_from("<I", data, position + RECORD_HEAD + 2)
                repair.messages_in_damaged_chunks += entries_size // 16  # (log time, offset) pairs
        else:
            copy.write(data[position:end])
        position = end


def _chunk_is_sound(content: bytes) -> bool:
    try:
        _chunk_data(content)
    except DamagedChunkError:
        return False
    return True


def _copy_cut_chunk(content: bytes, copy: BinaryIO, repair: McapRepair) -> None:
    """The complete records of a chunk that the end of the file cuts through, as top-level records."""
    try:
        records = _complete_records(_chunk_data(content, partial=True))
    except DamagedChunkError:  # not even its beginning decompresses
        return
    repair.records_from_cut_chunk = len(records)
    copy.write(b"".join(records))
