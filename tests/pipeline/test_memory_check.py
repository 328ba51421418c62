"""--batch-size against memory before Ray (pipeline.memory_check): exit 2 naming the numbers."""
import pytest

from pipeline import memory_check, validate as validate_module
from pipeline.config import ConfigError, GenerateConfig
from pipeline.validate import validate
from tests.pipeline.fakes import make_model_dir
from tests.pipeline.helpers import write_prompts
from workers.models import load_config

GIB = 1 << 30


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model") / "m")


def _config(tmp_path, model_dir, **kw):
    return GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model_dir),
                          device="cpu", **kw)


def test_huge_batch_is_refused_on_cpu_with_the_numbers(tmp_path, model_dir, monkeypatch):
    write_prompts(tmp_path / "in", 2)
    monkeypatch.setattr(memory_check, "host_available_bytes", lambda: 24 * GIB)
    with pytest.raises(ConfigError) as err:
        validate(_config(tmp_path, model_dir, batch_size=100_000_000))
    text = str(err.value)
    assert "--batch-size 100000000" in text and "24.0 GiB" in text and "activations" in text
    fits = int(text.split("lower --batch-size to at most ")[1].split()[0])
    assert 1 <= fits < 100_000_000
    validate(_config(tmp_path, model_dir, batch_size=fits))  # the advice itself passes
    with pytest.raises(ConfigError, match="--batch-size"):
        validate(_config(tmp_path, model_dir, batch_size=fits + 1))


def test_per_batch_token_budget_counts_on_cpu(model_dir):
    cfg = load_config(model_dir)
    config = GenerateConfig(target=str(model_dir), device="cpu", batch_size=64, max_new_tokens=100_000)
    small = GenerateConfig(target=str(model_dir), device="cpu", batch_size=64, max_new_tokens=10)
    need = sum(memory_check.batch_need(config, cfg, None, "cpu", 64).values())
    assert need > sum(memory_check.batch_need(small, cfg, None, "cpu", 64).values())
    with pytest.raises(ConfigError, match="--max-new-tokens 100000 .*or lower --max-new-tokens"):
        memory_check.check_batch_memory(config, cfg, None, "cpu", need - 1, "this host")
    memory_check.check_batch_memory(config, cfg, None, "cpu", need, "this host")


def test_gpu_batch_is_bounded_by_the_pool_plan(model_dir):
    cfg = load_config(model_dir)
    config = GenerateConfig(target=str(model_dir), device="cuda", batch_size=100_000_000)
    with pytest.raises(ConfigError, match=r"but the GPU \(80\.0 GiB x --gpu-memory-utilization 0\.9\)"):
        validate_module.check_batch_fits(config, cfg, None, 80 * GIB)
    validate_module.check_batch_fits(GenerateConfig(target=str(model_dir), device="cuda"), cfg, None, 80 * GIB)


def test_remote_cluster_is_not_checked_against_this_host(model_dir, monkeypatch):
    cfg = load_config(model_dir)
    monkeypatch.setattr(memory_check, "host_available_bytes", lambda: GIB)
    config = GenerateConfig(target=str(model_dir), device="cpu", batch_size=100_000_000, address="10.0.0.1:6379")
    validate_module.check_batch_fits(config, cfg, None, None)


def test_cli_exits_2_before_ray(tmp_path, model_dir, capsys):
    from jobs.cli import main

    write_prompts(tmp_path / "in", 2)
    assert main(["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--target", str(model_dir), "--device", "cpu", "--batch-size", "100000000"]) == 2
    assert "--batch-size 100000000" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
