"""TensorBoard event files of a run folder, written without TensorFlow.

Training mirrors every ``metrics.jsonl`` record into ``RUN/tb/`` as scalars with the same
names (``d_loss``, ``d_acc/x|h``, ``eval/clustering_accuracy``, ...) at the same steps, and
every figure it writes to ``RUN/figures/`` as an image (tag ``figures/<name>``, where
``samples_step400.png`` becomes ``figures/samples`` at step 400). ``tensorboard --logdir RUN``
(or ``--logdir runs`` for all runs) shows them.

The files are TensorBoard's own format, written with its pieces: ``Event`` and ``Summary``
protos from ``tensorboard.compat.proto`` framed by ``tensorboard.summary.writer``'s
``RecordWriter``. Every write opens the file, appends whole records, flushes and fsyncs, and
closes it, like ``metrics.jsonl``: no handle stays open, so Ctrl-C, a crash or ``kill -9``
leaves complete files (at worst a cut last record, which readers skip).

Each training process writes its own file. A resume continues from a checkpoint at step
``S`` and logs the later steps again, so it first drops every event after ``S`` from the
earlier files (each rewritten to a temporary name and moved into place), then starts its
file with a ``SessionLog.START`` event at step ``S + 1``: TensorBoard's own restart marker,
which makes a TensorBoard that already read the dropped events purge them. No (tag, step)
pair is written twice.

>>> import tempfile
>>> log = EventLog(tempfile.mkdtemp())
>>> log.add_record({"step": 10, "d_loss": 1.38, "d_acc/x|h": 0.5})
>>> sorted(read_scalars(log.folder))
['d_acc/x|h', 'd_loss']
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ggdsl.errors import TrainError

PathLike = str | os.PathLike[str]

FILE_PREFIX = "events.out.tfevents."
_FILE_NAME = re.compile(r"^events\.out\.tfevents\.(?P<time>\d+)\.(?P<host>.+)\.(?P<pid>\d+)\.(?P<index>\d+)$")
IMAGE_SUFFIXES = (".png", ".gif", ".jpg", ".jpeg")
_STEP_SUFFIX = re.compile(r"_step\d+$")
# TensorBoard's image summaries name the colour space by channel count.
_COLORSPACES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def event_files(folder: PathLike) -> list[Path]:
    """The event files in ``folder``, oldest first (by the time in their names)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match["time"]), int(match["index"]), entry.name, entry))
    return [entry for *_, entry in sorted(found)]


def writer_process(folder: PathLike) -> tuple[str, int] | None:
    """``(hostname, pid)`` of the process that wrote the newest event file in ``folder``."""
    files = event_files(folder)
    if not files:
        return None
    match = _FILE_NAME.match(files[-1].name)
    return match["host"], int(match["pid"])


def figure_tag(path: PathLike) -> str:
    """The image tag of a figure file: ``figures/<stem>`` without a ``_step<N>`` suffix.

    >>> figure_tag("runs/r/figures/samples_step400.png")
    'figures/samples'
    """
    return "figures/" + _STEP_SUFFIX.sub("", Path(path).stem)


def _pb():
    from tensorboard.compat.proto import event_pb2, summary_pb2

    return event_pb2, summary_pb2


def _read_raw(path: Path) -> list[bytes]:
    """Every complete record of an event file (a cut last record is skipped)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    return list(RawEventFileLoader(str(path)).Load())


def _write_records(path: Path, records: list[bytes], mode: str) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(path, mode) as stream:
        writer = RecordWriter(stream)
        for record in records:
            writer.write(record)
        writer.flush()
        os.fsync(stream.fileno())


class EventLog:
    """The event file of one training process, in ``folder`` (a run's ``tb/``).

    Args:
        folder: Where the event files go (created when missing).
        resume_step: The checkpoint step a resumed run continues from: events after it
            are dropped from the earlier files and this file opens with
            ``SessionLog.START`` at ``resume_step + 1``. ``None`` for a new run.

    Raises:
        TrainError: The folder cannot be written.
    """

    def __init__(self, folder: PathLike, *, resume_step: int | None = None):
        event_pb2, _ = _pb()
        self.folder = Path(folder)
        self.resume_step = resume_step
        self._written: set[tuple[str, int]] = set()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                self._drop_after(resume_step)
            earlier = event_files(self.folder)
            stamp = int(time.time())
            if earlier:
                # Names sort by their time; a later process must sort after the earlier ones.
                stamp = max(stamp, int(_FILE_NAME.match(earlier[-1].name)["time"]) + 1)
            self.path = self.folder / f"{FILE_PREFIX}{stamp:010d}.{socket.gethostname()}.{os.getpid()}.0"
            first = [
                event_pb2.Event(
                    wall_time=time.time(),
                    file_version="brain.Event:2",
                    source_metadata=event_pb2.SourceMetadata(writer="ggdsl"),
                )
            ]
            if resume_step is not None:
                first.append(
                    event_pb2.Event(
                        wall_time=time.time(),
                        step=resume_step + 1,
                        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
                    )
                )
            _write_records(self.path, [event.SerializeToString() for event in first], "xb")
        except OSError as error:
            raise TrainError(f"cannot write TensorBoard events to {self.folder}: {error}") from error

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r})"

    def _drop_after(self, step: int) -> None:
        """Rewrites earlier files without their events after ``step``; notes those at ``step``."""
        event_pb2, _ = _pb()
        for path in event_files(self.folder):
            records = _read_raw(path)
            kept = []
            for record in records:
                event = event_pb2.Event.FromString(record)
                if event.step > step:
                    continue
                kept.append(record)
                if event.step == step and event.HasField("summary"):
                    self._written.update((value.tag, step) for value in event.summary.value)
            if len(kept) == len(records) and path.stat().st_size == sum(len(r) + 16 for r in records):
                continue  # nothing dropped and no cut record at the end
            # The temporary name lacks "tfevents", so no reader takes it for an event file.
            descriptor, tmp_name = tempfile.mkstemp(dir=self.folder, prefix=".rewrite-", suffix=".tmp")
            os.close(descriptor)
            try:
                _write_records(Path(tmp_name), kept, "wb")
                os.replace(tmp_name, path)
            except BaseException:
                if os.path.exists(tmp_name):
                    os.unlink(tmp_name)
                raise

    def _append(self, step: int, values: list[Any]) -> None:
        event_pb2, summary_pb2 = _pb()
        values = [value for value in values if (value.tag, step) not in self._written]
        if not values:
            return
        event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values))
        try:
            _write_records(self.path, [event.SerializeToString()], "ab")
        except OSError as error:
            raise TrainError(f"cannot write TensorBoard events to {self.path}: {error}") from error
        self._written.update((value.tag, step) for value in values)

    def add_record(self, record: Mapping[str, Any]) -> None:
        """Writes a metrics record's numbers as scalars at its ``step``, one event.

        Args:
            record: A ``metrics.jsonl`` record: ``step`` and numeric values (others are
                left out).
        """
        _, summary_pb2 = _pb()
        step = int(record["step"])
        values = [
            summary_pb2.Summary.Value(tag=name, simple_value=float(value))
            for name, value in record.items()
            if name != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        ]
        self._append(step, values)

    def add_images(self, paths: list[Path], step: int) -> None:
        """Writes image files (PNG, GIF, JPEG) as image summaries at ``step``, tagged by :func:`figure_tag`."""
        from PIL import Image

        _, summary_pb2 = _pb()
        values = []
        for path in sorted(paths):
            data = Path(path).read_bytes()
            with Image.open(path) as image:
                width, height = image.size
                colorspace = _COLORSPACES.get(image.mode, 3)
            picture = summary_pb2.Summary.Image(
                height=height, width=width, colorspace=colorspace, encoded_image_string=data
            )
            values.append(summary_pb2.Summary.Value(tag=figure_tag(path), image=picture))
        self._append(step, values)

    @contextmanager
    def watch_figures(self, figures_dir: PathLike, step: int) -> Iterator[None]:
        """Logs the image files written or rewritten in ``figures_dir`` inside the block, at ``step``."""
        before = _figure_stamps(figures_dir)
        yield
        after = _figure_stamps(figures_dir)
        self.add_images([path for path, stamp in after.items() if before.get(path) != stamp], step)


def _figure_stamps(folder: PathLike) -> dict[Path, tuple[int, int]]:
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {
        entry: (entry.stat().st_mtime_ns, entry.stat().st_size)
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file()
    }


def read_scalars(folder: PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``folder``'s event files as ``{tag: [(step, value), ...]}``, read by
    TensorBoard's ``EventAccumulator`` (restart purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


__all__ = ["EventLog", "event_files", "figure_tag", "read_scalars", "writer_process"]
