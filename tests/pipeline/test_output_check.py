"""A read-only or otherwise unwritable --output is exit 2 before Ray, naming the path and why."""
import errno
import os

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline.config import ConfigError, GenerateConfig
from pipeline.output_check import check_writable


class ReadOnlyFS(LocalFileSystem):
    """A local filesystem mounted read-only (as root, chmod cannot make one)."""

    protocol = "readonlyfs"

    def makedirs(self, path, exist_ok=False):
        if not os.path.isdir(self._strip_protocol(path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    def pipe_file(self, path, value, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)


@pytest.fixture
def readonly_fs():
    fsspec.register_implementation("readonlyfs", ReadOnlyFS, clobber=True)
    yield


def test_read_only_output_is_refused_naming_path_and_reason(tmp_path, readonly_fs):
    out = f"readonlyfs://{tmp_path}/out"
    with pytest.raises(ConfigError, match=rf"--output {out} is not writable: Read-only file system: .*out"):
        check_writable(GenerateConfig(output=out))


def test_output_under_a_regular_file_is_refused_and_nothing_is_left(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not writable: .*(Not a directory|File exists)"):
        check_writable(GenerateConfig(output=str(tmp_path / "file" / "out")))
    check_writable(GenerateConfig(output=str(tmp_path / "a" / "b" / "out")))
    assert sorted(os.listdir(tmp_path)) == ["file"]  # the probe's directories are gone again


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_directory_without_write_permission_is_refused(tmp_path):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    try:
        with pytest.raises(ConfigError, match="Permission denied"):
            check_writable(GenerateConfig(output=str(tmp_path / "ro" / "out")))
    finally:
        os.chmod(tmp_path / "ro", 0o755)


def test_cli_exits_2_before_ray(tmp_path, readonly_fs, capsys):
    from jobs.cli import main
    from tests.pipeline.fakes import make_model_dir
    from tests.pipeline.helpers import write_prompts

    write_prompts(tmp_path / "in", 2)
    model = make_model_dir(tmp_path / "model")
    status = main(["generate", "--input", str(tmp_path / "in"), "--output", f"readonlyfs://{tmp_path}/out",
                   "--target", str(model), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and "is not writable: Read-only file system" in err and "rerun" not in err
