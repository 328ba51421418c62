"""The compiled-kernel cache directory is settable and never overrides the user's environment."""
from workers.runtime.compile_cache import use_compile_cache


def test_cache_dirs_point_under_the_chosen_directory(tmp_path, monkeypatch):
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    root = use_compile_cache(str(tmp_path / "cc"))
    import os
    assert root.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "cc" / "triton")


def test_an_explicit_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    use_compile_cache(str(tmp_path))
    import os
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else"
