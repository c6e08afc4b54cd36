"""A cheap structural check of a received dataset: every top-level element's declared
length must end inside the file, and the last one exactly at its end.

pydicom reads a truncated file, or one whose element claims more bytes than there are,
without complaint; such an instance would be acknowledged and stored broken. The walk
reads element headers only (a few bytes per element, values are skipped), so it costs
next to nothing even for large pixel data. An element of undefined length (sequences,
encapsulated pixel data) ends the walk: what follows is accepted as it is.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import UID

#: Explicit VRs with a 2-byte reserved field and a 4-byte length.
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED = 0xFFFFFFFF


def lengths_consistent(path: Path) -> bool:
    size = os.path.getsize(path)
    with open(path, "rb") as fp:
        try:
            read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
        except Exception:
            return False
        ts = UID(str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
        if ts == "1.2.840.10008.1.2.1.99":  # deflated: not walked
            return True
        try:
            implicit, little = ts.is_implicit_VR, ts.is_little_endian
        except (AttributeError, ValueError):
            return True  # an unknown transfer syntax: not ours to judge here
        start = fp.tell()
        group_length = meta.get("FileMetaInformationGroupLength")
        if group_length is not None:  # the meta reader may have swallowed a few bytes of a short tail
            start = 128 + 4 + 12 + int(group_length)
        # pydicom reads a dataset encoded with the other VR mode than negotiated: so do we.
        return _walk(fp, start, size, implicit, little) or _walk(fp, start, size, not implicit, little)


def _walk(fp, pos: int, size: int, implicit: bool, little: bool) -> bool:
    end = "<" if little else ">"
    while pos < size:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            return not head.strip(b"\x00")  # a few bytes of zero padding are tolerated
        if implicit:
            length = struct.unpack(end + "I", head[4:8])[0]
            start = pos + 8
        else:
            vr = head[4:6]
            if vr in LONG_VRS:
                more = fp.read(4)
                if len(more) < 4:
                    return False
                length = struct.unpack(end + "I", more)[0]
                start = pos + 12
            else:
                length = struct.unpack(end + "H", head[6:8])[0]
                start = pos + 8
        if length == UNDEFINED:
            return True
        pos = start + length
        if pos > size:
            return False  # declares more bytes than the file has
    return pos == size
