"""The demo leaves no simsd-demo-* directory in the temp folder, also when its run fails."""
import tempfile

from jobs.cli import main


def test_the_demo_removes_its_temp_dir(tmp_path, monkeypatch, capsys):
    import pipeline.demo
    import pipeline.driver

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(pipeline.demo, "REFERENCE_DIR", tmp_path / "no-reference")  # tiny models in the temp dir
    monkeypatch.setattr(pipeline.driver, "run", lambda config: (_ for _ in ()).throw(RuntimeError("stop here")))
    assert main(["generate", "--output", str(tmp_path / "out"), "--device", "cpu"]) == 1
    assert "stop here" in capsys.readouterr().err
    assert not list((tmp_path / "tmp").glob("simsd-demo-*"))
