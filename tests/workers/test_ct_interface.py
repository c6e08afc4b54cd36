"""Analyser plug-in interface: discovery, applies() filter, failures contained."""

from __future__ import annotations

import json
import time

from core.study import Series, Study
from rules.model import Evidence, Flag, Priority
from workers import analysers as an
from workers.analysers import AnalysisResult, Analyser, load_analysers, run_analysers
from workers.analysers.ct_hardware import CTHardwareAnalyser


def study(*series: Series) -> Study:
    return Study(uid="1.2.3", series={s.uid: s for s in series})


def ct(uid="1.2.3.4", n=40, image_type=("ORIGINAL", "PRIMARY", "AXIAL")) -> Series:
    return Series(uid=uid, modality="CT", attributes={"ImageType": list(image_type), "SliceThickness": 0.8},
                  instances=[{"path": f"/nonexistent/{i}.dcm", "InstanceNumber": i} for i in range(n)])


class Boom:
    name = "boom"

    def applies(self, study):
        return True

    def analyse(self, study):
        raise RuntimeError("model file missing")


class Finder:
    name = "finder"

    def applies(self, study):
        return "MR" in study.modalities

    def analyse(self, study):
        ev = Evidence(source="series:9", measurement={"name": "x", "value": 1.0, "unit": "mm", "threshold": 0.5})
        return AnalysisResult(self.name, flags=[Flag("csf_leak", Priority.URGENT, "finder.x", [ev])])


def test_ct_applies_is_header_only_and_fast():
    a = CTHardwareAnalyser()
    assert isinstance(a, Analyser)
    t = time.perf_counter()
    assert a.applies(study(ct()))  # the paths do not exist: no file is opened
    assert not a.applies(study(Series(uid="9", modality="MR", instances=[{}] * 40)))
    assert not a.applies(study(ct(image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))))
    assert not a.applies(study(ct(n=3)))
    assert time.perf_counter() - t < 0.05


def test_failure_gives_not_assessed_and_others_still_run():
    s = study(ct(), Series(uid="9", modality="MR"))
    results = run_analysers(s, [Boom(), Finder()])
    assert [r.analyser for r in results] == ["boom", "finder"]
    assert results[0].flags == [] and "model file missing" in results[0].not_assessed[0]
    assert results[1].flags[0].code == "csf_leak"
    json.dumps([r.to_dict() for r in results])


def test_unreadable_ct_files_do_not_crash_the_pipeline():
    [res] = run_analysers(study(ct()), [CTHardwareAnalyser()])
    assert res.flags == [] and res.not_assessed and "analyser error" in res.not_assessed[0]


def test_not_applying_analyser_is_skipped():
    assert run_analysers(study(ct()), [Finder()]) == []


def test_load_analysers_builtins_and_entry_points(monkeypatch):
    class EP:
        def __init__(self, name, obj):
            self.name, self._obj = name, obj

        def load(self):
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    eps = [EP("finder", Finder), EP("broken", ImportError("no torch")), EP("dup", CTHardwareAnalyser),
           EP("notone", object)]
    monkeypatch.setattr(an, "entry_points", lambda group: eps if group == an.ENTRY_POINT_GROUP else [])
    names = [a.name for a in load_analysers()]
    assert names == ["ct_hardware", "finder"]
