"""Device availability and CUDA-only settings are refused before Ray starts (exit 2, nothing written)."""
import time
import types

import pytest

from jobs.cli import main
from pipeline import devices
from pipeline.config import ConfigError, GenerateConfig
from tests.pipeline.helpers import write_prompts


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine has no GPU, no Ray is initialised, no cluster is named."""
    monkeypatch.setattr(devices, "_local_gpus", lambda: 0)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "ray", types.SimpleNamespace(is_initialized=lambda: False))


def test_device_cuda_without_a_gpu_is_refused(no_gpu):
    with pytest.raises(ConfigError, match=r"--device cuda, but this machine has no usable CUDA GPU .*--device cpu"):
        devices.check_device(GenerateConfig(device="cuda"))


def test_cuda_only_kernels_on_cpu_are_refused(no_gpu):
    with pytest.raises(ConfigError, match="--attention triton runs only on CUDA.*--device cpu was given"):
        devices.check_device(GenerateConfig(device="cpu", attention="triton"))
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):  # auto resolves to cpu here
        devices.check_device(GenerateConfig(attention="triton"))
    with pytest.raises(ConfigError, match="--layer-kernels triton runs only on CUDA.*use --layer-kernels auto or torch"):
        devices.check_device(GenerateConfig(device="cpu", layer_kernels="triton"))


def test_a_named_cluster_decides_the_device(no_gpu, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    devices.check_device(GenerateConfig(device="cuda", attention="triton"))  # the cluster may have GPUs
    with pytest.raises(ConfigError, match="--device cpu was given"):
        devices.check_device(GenerateConfig(device="cpu", attention="triton", address="auto"))


def test_an_initialised_ray_reports_its_gpus(no_gpu, monkeypatch):
    fake = types.SimpleNamespace(is_initialized=lambda: True, cluster_resources=lambda: {"CPU": 2.0})
    monkeypatch.setitem(__import__("sys").modules, "ray", fake)
    with pytest.raises(ConfigError, match="Ray instance initialised in this process has no GPU"):
        devices.check_device(GenerateConfig(device="cuda"))
    fake.cluster_resources = lambda: {"GPU": 1.0}
    devices.check_device(GenerateConfig(device="cuda", attention="triton"))


def test_cpu_settings_pass(no_gpu):
    devices.check_device(GenerateConfig())
    devices.check_device(GenerateConfig(device="cpu", attention="torch"))


@pytest.mark.parametrize("extra", [["--device", "cuda"], ["--device", "cpu", "--attention", "triton"]])
def test_cli_exits_2_in_seconds_and_writes_nothing(no_gpu, tmp_path, tiny_models, capsys, extra):
    write_prompts(tmp_path / "in", 2, shards=1)
    began = time.time()
    assert main(["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--target", str(tiny_models["target"]), *extra]) == 2
    assert time.time() - began < 10
    err = capsys.readouterr().err
    assert err.startswith("simsd generate: error: --") and "Traceback" not in err
    assert not (tmp_path / "out").exists()
