"""A run folder and its events: the id is a name, "completed?" and the record come from the folder's files, the
event kinds the records replay are the ones the schema defines, and a tailer never returns half a line."""

from __future__ import annotations

import json

import pytest
from test_report import make_run

from protobench import events
from protobench.errors import UsageError
from protobench.events import EVENTS_NAME, append_event, follow, make_event
from protobench.records import load_record
from protobench.runfolder import RunFolder, run_folders, unreadable_runs


def test_a_run_folder_is_named_by_its_id_under_runs(tmp_path):
    folder = RunFolder(tmp_path, "digits-random-cfg-s0-abc")
    assert folder.path == tmp_path / "runs" / "digits-random-cfg-s0-abc"
    assert folder.config_path.name == "config.json" and folder.events_path.name == "events.jsonl"
    assert RunFolder.at(folder.path) == folder
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(UsageError, match="not a run id"):
            RunFolder(tmp_path, bad)


def test_completed_and_record_come_from_the_folder(tmp_path):
    record = make_run(tmp_path, "random", 0, [40, 20], [1, 2])
    folder = RunFolder(tmp_path, record["run_id"])
    assert folder.started() and folder.completed()["run_id"] == record["run_id"]
    assert folder.record() == record
    folder.append(make_event(events.RESUME, images_seen=1500, step=1))  # resumed: running again
    assert folder.completed() is None and folder.record()["status"] == "running"
    assert RunFolder(tmp_path, "never-started").completed() is None


def test_run_folders_lists_runs_and_unreadable_runs_names_the_damage(tmp_path):
    good = make_run(tmp_path, "random", 0, [40, 20], [1, 2])["run_id"]
    (tmp_path / "runs" / ".tmp-x").mkdir()
    (tmp_path / "runs" / "empty").mkdir()
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    assert [f.run_id for f in run_folders(tmp_path)] == ["broken", good]
    (found,) = unreadable_runs(tmp_path)
    assert found["run_id"] == "broken" and found["file"] == "config.json" and not found["readable"]


def test_every_kind_the_records_replay_is_in_the_schema(tmp_path):
    run = make_run(tmp_path, "random", 0, [40, 20], [1, 2])
    kinds = {json.loads(line)["event"] for line in (tmp_path / "runs" / run["run_id"] / EVENTS_NAME).open()}
    assert kinds <= set(events.FIELDS)
    assert set(events.LIFECYCLE) <= set(events.FIELDS)
    append_event(tmp_path / "runs" / run["run_id"] / EVENTS_NAME, make_event(events.FAILED, error="boom"))
    assert load_record(tmp_path / "runs" / run["run_id"])["error"] == "boom"


def test_follow_returns_whole_lines_and_waits_for_a_torn_one(tmp_path):
    path = tmp_path / EVENTS_NAME
    assert follow(path, 0) == (0, [])  # not written yet
    path.write_bytes(b'{"event": "start"}\n{"event": "lo')
    offset, new = follow(path, 0)
    assert new == [{"event": "start"}] and offset == len(b'{"event": "start"}\n')
    with path.open("ab") as fh:
        fh.write(b'ss", "step": 1}\n')
    assert follow(path, offset) == (path.stat().st_size, [{"event": "loss", "step": 1}])
