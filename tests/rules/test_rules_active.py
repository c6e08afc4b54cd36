"""ActiveRulebook: reload on change, keep the previous rulebook on a bad edit."""

import logging
import os
import shutil

from rules.active import ActiveRulebook
from rules.engine import DEFAULT_DIRECTORY


def copy_rules(tmp_path):
    for f in DEFAULT_DIRECTORY.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def touch_later(path):
    st = path.stat()
    os.utime(path, (st.st_atime + 10, st.st_mtime + 10))


def test_reload_only_when_content_changes(tmp_path):
    d = copy_rules(tmp_path)
    active = ActiveRulebook(d)
    first = active.get()
    assert active.get() is first
    assert active.reload() is False
    touch_later(d / "late.yaml")
    assert active.check_for_changes() is False and active.get() is first  # same content
    f = d / "late.yaml"
    f.write_text(f.read_text().replace("family: late", "family: late  # edited"))
    touch_later(f)
    assert active.check_for_changes() is True
    assert active.get() is not first and active.get().version != first.version


def test_bad_edit_keeps_previous_rulebook_and_logs_file_line(tmp_path, caplog):
    d = copy_rules(tmp_path)
    active = ActiveRulebook(d)
    before = active.get()
    f = d / "hardware.yaml"
    f.write_text(f.read_text().replace("flags: [hardware_failure, pseudarthrosis]", "flags: [hardware_failure, pseudoarthrosis]"))
    with caplog.at_level(logging.ERROR, logger="rules.active"):
        assert active.reload() is False
    assert active.get() is before
    assert f"{f}:" in caplog.text and "unknown flag code 'pseudoarthrosis'" in caplog.text
    f.write_text(f.read_text().replace("pseudoarthrosis", "pseudarthrosis") + "\n")
    assert active.reload() is True and active.get() is not before
