"""Property-based tests (hypothesis) of header parsing: whatever the bytes or the values,
the listener's parse path gives a summary or a clean rejection, and a study is always built."""

from __future__ import annotations

import string
from io import BytesIO

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from core.headers import summarize
from core.study import Study, as_int
from agent.uids import is_valid_uid

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])  # deterministic: same examples every run

anything = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40),
                     st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=4), st.booleans())


@SETTINGS
@given(st.lists(st.fixed_dictionaries({"SeriesNumber": anything, "InstanceNumber": anything,
                                       "SOPInstanceUID": st.one_of(st.text(max_size=20), st.integers())}),
                min_size=1, max_size=8),
       st.lists(st.sampled_from(["STAT", "URGENT", "HIGH", "ROUTINE", "", "abc", None]), min_size=1, max_size=8))
def test_a_study_is_built_from_any_instance_numbers(items, priorities):
    summaries = []
    for n, item in enumerate(items):
        s = dict(item, StudyInstanceUID="1.2.3", SeriesInstanceUID=f"1.2.3.{n % 2}")
        p = priorities[n % len(priorities)]
        if p is not None:
            s["OrderPriorities"] = {"RequestedProcedurePriority": p}
        summaries.append(s)
    study = Study.from_summaries(summaries)
    assert study.instance_count == len(items)
    if "STAT" in [priorities[n % len(priorities)] for n in range(len(items))]:
        assert study.order_priorities["RequestedProcedurePriority"] == "STAT", "the floor is the highest"


@SETTINGS
@given(anything)
def test_as_int_never_raises(value):
    out = as_int(value)
    assert out is None or isinstance(out, int)


def _parse(body: bytes):
    """What the listener does with a received dataset: parse the header, summarise, check UIDs."""
    ds = pydicom.dcmread(BytesIO(body), stop_before_pixels=True, force=True)
    summary = summarize(ds, size=len(body))
    uids = (ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID"))
    return summary, all(is_valid_uid(u) for u in uids)


def _good_body() -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.3", "1.2.3.4", "1.2.3.4.5"
    ds.PatientName = "PROP^TEST"
    ds.InstanceNumber = "1"
    ds.ReasonForTheRequestedProcedure = "J2 arthrodèse, déficit"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


GOOD = _good_body()


@SETTINGS
@given(st.integers(min_value=0, max_value=len(GOOD)), st.binary(max_size=64))
def test_header_parsing_of_mutated_bytes_summarises_or_raises_cleanly(cut, noise):
    body = GOOD[:cut] + noise + GOOD[cut + len(noise):]
    try:
        summary, valid = _parse(body)
    except (MemoryError, RecursionError):  # pragma: no cover - must never happen
        pytest.fail("unbounded parse")
    except Exception:
        return  # the listener quarantines it (0xC000)
    assert isinstance(summary, dict)
    assert all(isinstance(t["value"], str) for t in summary["TextFields"])


@SETTINGS
@given(st.text(alphabet=string.printable + "éèà\u00ff/\\.", max_size=80))
def test_a_uid_that_is_not_valid_never_names_a_path(text):
    from agent.store import InvalidUID, StudyStore

    if is_valid_uid(text):
        assert "/" not in text and ".." not in text.split(".") and text.strip() == text
        return
    store = StudyStore.__new__(StudyStore)
    store.studies = None
    with pytest.raises(InvalidUID):
        StudyStore.path_for(store, text, "1.2", "1.2.3")


@SETTINGS
@given(st.integers(min_value=0, max_value=len(GOOD)), st.binary(max_size=16))
def test_length_walk_never_raises_and_catches_truncation(cut, noise):
    import tempfile
    from pathlib import Path

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian

    from agent.structure import lengths_consistent

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with tempfile.TemporaryDirectory() as d:
        def make(body: bytes) -> Path:
            p = Path(d) / "x.dcm"
            with open(p, "wb") as fh:
                fh.write(b"\0" * 128 + b"DICM")
                write_file_meta_info(fh, meta)
                fh.write(body)
            return p

        assert lengths_consistent(make(GOOD))
        result = lengths_consistent(make(GOOD[:cut] + noise))
        assert isinstance(result, bool)
        if not noise and 0 < cut < len(GOOD) and GOOD[cut - 1:cut] != b"\0":
            # cut inside an element (not on a boundary): caught
            boundaries = set()
            pos = 0
            import struct
            while pos < len(GOOD):
                vr = GOOD[pos + 4:pos + 6]
                if vr in (b"OB", b"OW", b"SQ", b"UT", b"UN", b"UC", b"UR"):
                    pos += 12 + struct.unpack("<I", GOOD[pos + 8:pos + 12])[0]
                else:
                    pos += 8 + struct.unpack("<H", GOOD[pos + 6:pos + 8])[0]
                boundaries.add(pos)
            if cut not in boundaries:
                assert not result
