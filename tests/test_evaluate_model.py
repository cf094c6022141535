"""benchmarks/evaluate_model.py: option combinations it cannot honour are refused in one line
before anything is read or written (the --out folder is replaced only by a real run)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--contrast", "0.1"], "--contrast needs a re-styled copy"),
        (["--style", "warped", "--contrast", "0.1"], "--contrast needs a re-styled copy"),
        (["--style", "hard", "--mostly-dim", "0.1"], "--mostly-dim needs --style uneven"),
        (["--style", "hard", "--contrast", "1.5"], "--contrast must lie in (0, 1]"),
        (["--style", "uneven", "--mostly-dim", "0"], "--mostly-dim must lie in (0, 1]"),
    ],
)
def test_refused_options_leave_the_out_folder(
    options, said, benchmark_script, monkeypatch, tmp_path, capsys
):
    mod = benchmark_script("evaluate_model")
    out = tmp_path / "earlier results"
    out.mkdir()
    (out / "scores.json").write_text("{}")
    argv = ["evaluate_model.py", "--model", "m", "--data", str(tmp_path / "none"), "--out"]
    monkeypatch.setattr("sys.argv", [*argv, str(out), *options])
    with pytest.raises(SystemExit) as exc:
        mod.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert said in err[-1] and "Traceback" not in "".join(err)
    assert (out / "scores.json").read_text() == "{}"
