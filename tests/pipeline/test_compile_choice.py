"""--compile auto: the driver compiles the layers only for jobs long enough to repay it."""
from pipeline import compile_choice
from pipeline.config import GenerateConfig


def _config(**kw) -> GenerateConfig:
    base = dict(input="in", output="out", target="t", device="cuda", workers=2, max_new_tokens=256)
    return GenerateConfig(**{**base, **kw})


def test_a_short_job_runs_uncompiled_and_says_why():
    config, line = compile_choice.choose(_config(), pending_rows=512)
    assert config.compile == "off" and config.decode.compile == "off"
    assert "off" in line and "65,536 tokens per engine actor" in line and "--compile on overrides" in line


def test_a_long_job_compiles_and_the_threshold_counts_per_actor():
    rows = 2 * compile_choice.MIN_TOKENS_PER_ACTOR // 250  # exactly the threshold per actor on 2 actors
    assert compile_choice.choose(_config(max_new_tokens=250), rows)[0].compile == "on"
    assert compile_choice.choose(_config(max_new_tokens=250), rows - 1)[0].compile == "off"
    assert compile_choice.choose(_config(max_new_tokens=250, workers=4), rows)[0].compile == "off"


def test_an_explicit_choice_and_cpu_jobs_are_left_alone():
    for choice in ("on", "off"):
        config, line = compile_choice.choose(_config(compile=choice), 10**9 if choice == "off" else 1)
        assert config.compile == choice and line is None
    config, line = compile_choice.choose(_config(device="cpu"), 10**9)
    assert config.compile == "auto" and line is None
