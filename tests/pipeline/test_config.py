import pytest

from pipeline.config import ConfigError, GenerateConfig, build_parser, parse_args


def test_flags_cover_every_field():
    flags = {a.dest for a in build_parser()._actions}
    from dataclasses import fields
    assert {f.name for f in fields(GenerateConfig)} <= flags


def test_cli_wins_over_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("input: a.parquet\nmax-new-tokens: 7\ntemperature: 0.5\ndecoder: vanilla\n")
    config = parse_args(["--config", str(path), "--max-new-tokens", "9"])
    assert config.input == "a.parquet" and config.max_new_tokens == 9 and config.temperature == 0.5
    assert config.decode.max_new_tokens == 9


def test_bad_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="threshold"):
        parse_args(["--threshold", "2"])
    with pytest.raises(ConfigError, match="needs --draft"):
        parse_args(["--decoder", "simsd", "--target", "t"])
    path = tmp_path / "job.yaml"
    path.write_text("nonsense: 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_args(["--config", str(path)])


@pytest.mark.parametrize("name", ["flex", "flex-main"])
def test_removed_flex_attention_is_refused_listing_the_valid_choices(tmp_path, name):
    """The FlexAttention backends were removed (docs/engine.md): naming one, on the command line,
    in a YAML job or in a DecodeConfig, is a config error that lists auto, torch and triton."""
    from workers.api import DecodeConfig

    with pytest.raises(ConfigError, match=rf"--attention: invalid choice: '{name}' \(choose from 'auto', 'torch', 'triton'\)"):
        parse_args(["--attention", name])
    path = tmp_path / "job.yaml"
    path.write_text(f"attention: {name}\n")
    with pytest.raises(ConfigError, match=rf"--attention must be one of \('auto', 'torch', 'triton'\), got '{name}'"):
        parse_args(["--config", str(path)])
    with pytest.raises(ValueError, match=rf"attention must be one of \('auto', 'torch', 'triton'\), got '{name}'"):
        DecodeConfig(attention=name)


def test_fingerprint_ignores_speed_and_credentials():
    a = GenerateConfig(input="x", target="t", batch_size=4, workers=1, storage_options={"key": "k"})
    b = GenerateConfig(input="x", target="t", batch_size=64, workers=3)
    c = GenerateConfig(input="x", target="t", temperature=0.7)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert "k" not in str(a.public_dict()["storage_options"][0:0])


def test_decoder_auto_picks_a_lossless_decoder_and_says_why():
    with_draft = GenerateConfig(input="x", target="t", draft="d", decoder="auto")
    assert (with_draft.decoder, with_draft.verify) == ("simsd", "exact")
    assert with_draft.decode.adaptive_on and "adaptive" in with_draft.decoder_choice
    alone = GenerateConfig(input="x", target="t", decoder="auto")
    assert alone.decoder == "vanilla" and alone.decode.remasking == "sequential"
    assert "no --draft" in alone.decoder_choice
    with pytest.raises(ConfigError, match="lossy"):
        GenerateConfig(input="x", target="t", decoder="auto", remasking="dynamic")
    with pytest.raises(ConfigError, match="denoising-steps"):
        GenerateConfig(input="x", target="t", decoder="auto", denoising_steps=2)
    with pytest.raises(ConfigError, match="adaptive off"):
        GenerateConfig(input="x", target="t", draft="d", decoder="auto", adaptive="off")
    # adaptive changes speed only: an output written with it off resumes with it on
    exact = dict(input="x", target="t", draft="d", verify="exact")
    assert GenerateConfig(**exact, adaptive="off").fingerprint() == GenerateConfig(**exact).fingerprint()


def test_draft_alone_means_the_fastest_lossless_decoder():
    implicit = GenerateConfig(input="x", target="t", draft="d")
    assert (implicit.decoder, implicit.verify) == ("simsd", "exact")
    assert implicit.decode.adaptive_on and "adaptive" in implicit.decoder_choice
    # the paper's layout only when named; a named fixed draft stays fixed
    paper = GenerateConfig(input="x", target="t", draft="d", verify="paper")
    assert (paper.decoder, paper.verify, paper.decode.adaptive_on) == ("simsd", "paper", False)
    fixed = GenerateConfig(input="x", target="t", draft="d", adaptive="off")
    assert (fixed.decoder, fixed.verify, fixed.decode.adaptive_on) == ("simsd", "exact", False)
    assert GenerateConfig(input="x", target="t", draft="d", decoder="simsd").verify == "exact"
    with pytest.raises(ConfigError, match="approximate"):
        GenerateConfig(input="x", target="t", draft="d", decoder="auto", verify="paper")


def test_sampling_with_a_draft_picks_the_lossless_draft_order_and_says_so():
    from types import SimpleNamespace

    from pipeline.validate import check_lossless_sampling

    sampled = parse_args(["--target", "t", "--draft", "d", "--temperature", "0.8"])
    assert sampled.decode.draft_remasking == "sequential" and sampled.decode.acceptance_rule(0.8) == "mrs"
    assert "left to right" in sampled.sampling_choice and "MRS" in sampled.sampling_choice
    check_lossless_sampling(sampled, SimpleNamespace(is_diffusion=True))  # no refusal
    for auto in (["--decoder", "auto"], ["--acceptance", "mrs"]):
        assert parse_args(["--target", "t", "--draft", "d", "--temperature", "0.8", *auto]).draft_remasking == "sequential"
    greedy = parse_args(["--target", "t", "--draft", "d"])
    assert greedy.draft_remasking == "static" and not hasattr(greedy, "sampling_choice")
    # Greedy outputs keep their fingerprint: the earlier explicit default resumes them.
    assert greedy.fingerprint() == parse_args(["--target", "t", "--draft", "d", "--draft-remasking", "static"]).fingerprint()
    lossy = parse_args(["--target", "t", "--draft", "d", "--temperature", "0.8", "--draft-remasking", "static"])
    with pytest.raises(ConfigError, match="drop --draft-remasking"):  # only an explicit lossy order is refused
        check_lossless_sampling(lossy, SimpleNamespace(is_diffusion=True))


def test_the_summary_names_the_sampling_choice():
    from pipeline import summary

    config = GenerateConfig(input="x", target="t", draft="d", temperature=0.8, device="cpu")
    assert "left to right" in summary.compute(None, None, config, 1.0, 1)["sampling_choice"]
    assert summary.compute(None, None, GenerateConfig(input="x", target="t", device="cpu"), 1.0, 1)["sampling_choice"] is None


def test_no_abbreviations_and_did_you_mean():
    with pytest.raises(ConfigError, match=r"--max-new-token \(did you mean --max-new-tokens"):
        parse_args(["--max-new-token", "5"])  # a unique prefix is no longer silently accepted
    with pytest.raises(ConfigError, match=r"--tempreature=0.5 \(did you mean --temperature\?\)"):
        parse_args(["--tempreature=0.5"])
    with pytest.raises(ConfigError, match=r"unrecognized arguments: --zzz \(see"):
        parse_args(["--zzz"])
