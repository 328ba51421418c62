"""The `simsd` console script: described subcommands, suggestions for a mistyped one."""
import pytest

from jobs.cli import COMMANDS, main


def test_help_describes_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, about) in COMMANDS.items():
        assert f"  {name} " in out and about in out


def test_a_mistyped_command_gets_a_suggestion(capsys):
    assert main(["generat"]) == 2
    assert "unknown command 'generat' (did you mean 'generate'?)" in capsys.readouterr().err


def test_report_does_not_accept_an_abbreviated_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path), "--storage", "{}"])  # --storage-options, abbreviated
    assert exit_.value.code == 2 and "unrecognized arguments: --storage" in capsys.readouterr().err
