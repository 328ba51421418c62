"""summary.parquet and report.html: written atomically, an unreadable one counts as missing, and a
rerun with nothing left writes them again from data/ (a kill between the commit and the summary)."""
import errno
import io
import os

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline import report, summary
from tests.pipeline.helpers import finished_output, job_argv


class _Full(io.RawIOBase):
    """A file on a disk with ``room`` bytes left: the next write past it raises ENOSPC."""

    def __init__(self, real, room):
        self.real, self.room = real, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            self.real.write(bytes(data[: self.room]))
            self.real.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.real.write(data)

    def fileno(self):
        return self.real.fileno()

    def flush(self):
        if not self.real.closed:
            self.real.flush()

    def close(self):
        if not self.closed:
            self.real.close()
        super().close()


class FullDiskFS(LocalFileSystem):
    """The local filesystem with 100 bytes free for every file written."""

    def open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            return _Full(open(path, mode), 100)
        return super().open(path, mode, **kwargs)


def test_full_disk_keeps_the_previous_summary_and_leaves_no_partial_file(tmp_path):
    out = str(tmp_path)
    summary.write(fsspec.filesystem("file"), out, {"rows": 7})
    with pytest.raises(OSError, match="No space left on device"):
        summary.write(FullDiskFS(), out, {"rows": 8, "pad": "x" * 10_000})
    assert summary.read(fsspec.filesystem("file"), out) == {"rows": 7}
    assert sorted(os.listdir(tmp_path)) == ["summary.parquet"]


def test_full_disk_never_leaves_a_truncated_report(tmp_path):
    fs = fsspec.filesystem("file")
    finished_output(tmp_path)
    out = str(tmp_path / "out")
    assert report.write_quietly(FullDiskFS(), out) is None  # a warning, not a failed job
    assert not os.path.exists(f"{out}/report.html") and not report.is_complete(fs, out)


def test_unreadable_summary_counts_as_missing(tmp_path):
    (tmp_path / "summary.parquet").write_bytes(b"PAR1" + b"\0" * 8000)  # truncated by a full disk
    assert summary.read(fsspec.filesystem("file"), str(tmp_path)) is None


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_rerun_with_nothing_left_writes_the_summary_again(tmp_path, capsys, damage):
    from jobs.generate import main

    model = finished_output(tmp_path)
    if damage == "truncated":
        (tmp_path / "out" / "summary.parquet").write_bytes(b"PAR1" + b"\0" * 8000)
        (tmp_path / "out" / "report.html").write_text("<html><body>cut short")
    assert main(job_argv(tmp_path, model)) == 0
    text = capsys.readouterr().out
    assert "nothing to do" in text and "written again" in text
    stats = summary.read(fsspec.filesystem("file"), str(tmp_path / "out"))
    assert stats["rows"] == 4 and stats["generated_tokens"] == 12
    assert report.is_complete(fsspec.filesystem("file"), str(tmp_path / "out"))
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith("_lease")]
    assert main(job_argv(tmp_path, model)) == 0  # now complete: left alone
    assert "written again" not in capsys.readouterr().out
