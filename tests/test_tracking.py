"""--track and --tensorboard against the real packages (issue 24; test_run_trust has them on stand-ins): a tiny run's
every metrics.csv value reaches wandb's offline run file and TensorBoard's event file, read back by TensorBoard's own
reader and by wandb's protobuf records. Both packages are optional (requirements.txt): each test skips without its."""

import glob
import json
import math
import struct

import pytest

from conftest import TINY, read_metrics, run_script


def tracked_run(tmp_path, prompts_file, flag):
    proc, run_dir = run_script("sta_naive", *TINY, "--prompts", prompts_file, "--iterations", "2", flag,
                               "--run-name", "tracked", tmp_path=tmp_path,
                               env={"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_metrics(run_dir)
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    return run_dir, rows


def numbers(row):
    return {key: float(value) for key, value in row.items() if value not in ("", None)}


def wandb_records(path):
    """The protobuf records of a .wandb file. wandb 0.31 ships no Python reader for it (its core is a Go binary); the
    format is LevelDB's log: a 7-byte header (':W&B', magic, version), then 32 KiB blocks of chunks, each with a 7-byte
    header (CRC-32, length, type: 1 full, 2 first, 3 middle, 4 last); a block's tail under 7 bytes is padding."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero fill at the end of a preallocated block
            break
        pending, pos = pending + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_holds_every_metrics_row_and_the_config(tmp_path, prompts_file):
    pytest.importorskip("wandb", reason="wandb is optional (requirements.txt)")
    run_dir, rows = tracked_run(tmp_path, prompts_file, "--track")
    (path,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "*.wandb"))
    history, run = {}, None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[int(items["iteration"])] = items
        elif kind == "run":
            run = record.run
    config = json.loads((run_dir / "config.json").read_text())
    assert run is not None and run.run_id == config["wandb_id"] and run.display_name == "tracked"
    assert json.loads({item.key: item.value_json for item in run.config.update}["args"])["track"] is True
    assert sorted(history) == [0, 1, 2]
    for row in rows:
        logged = history[int(row["iteration"])]
        for key, value in numbers(row).items():
            assert math.isclose(float(logged[key]), value, rel_tol=1e-12, abs_tol=1e-12), (row["iteration"], key)


def test_tensorboard_event_file_holds_every_metrics_row_as_scalars(tmp_path, prompts_file):
    pytest.importorskip("tensorboard", reason="tensorboard is optional (requirements.txt)")
    from tensorboard.backend.event_processing import event_accumulator

    run_dir, rows = tracked_run(tmp_path, prompts_file, "--tensorboard")
    (path,) = glob.glob(str(run_dir / "events.out.tfevents.*"))
    events = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    assert "config" in " ".join(events.Tags()["tensors"])  # the config as text (a tensor summary)
    for row in rows:
        for key, value in numbers(row).items():
            if key == "iteration":
                continue
            logged = scalars[key][int(row["iteration"])]  # float32 in the event file
            assert math.isclose(logged, value, rel_tol=1e-6, abs_tol=1e-6), (row["iteration"], key, logged, value)
