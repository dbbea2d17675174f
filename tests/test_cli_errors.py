"""Expected user errors (missing dataset or checkpoint, corrupt file, bad flag value) end a `vlaforge`
command with one line naming the problem, not a traceback."""

import pytest

from vlaforge.cli import main


def _one_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        rc = main(argv)
        raise SystemExit(rc)  # a command that returns its status instead of exiting
    cap = capsys.readouterr()
    err = cap.err.strip() or cap.out.strip() or str(e.value.code)
    assert e.value.code not in (0, None) and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_missing_and_corrupt_inputs_are_one_line(tmp_path, capsys):
    assert "does not exist" in _one_line(capsys, ["dataset", "info", str(tmp_path / "nope")])
    run = ["--out", str(tmp_path / "run"), "--steps", "1"]
    assert "does not exist" in _one_line(capsys, ["train", "--data", str(tmp_path / "nope"), *run])
    bad = tmp_path / "bad"
    (bad / "meta").mkdir(parents=True)
    (bad / "meta" / "info.json").write_text("{")
    assert "not valid JSON" in _one_line(capsys, ["train", "--data", str(bad), *run])
    assert "must be >= 1" in _one_line(
        capsys, ["train", "--data", str(bad), "--out", str(tmp_path / "r"), "--steps", "-1"]
    )
    assert "does not exist" in _one_line(capsys, ["serve", str(tmp_path / "nope")])
    (tmp_path / "ckpt" / "policy").mkdir(parents=True)
    (tmp_path / "ckpt" / "policy" / "config.json").write_text('{"policy_class": "pi0"}')
    assert "incomplete" in _one_line(capsys, ["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "x")])


def test_quickstart_flags_are_checked_before_anything_runs(tmp_path, capsys):
    out = ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")]
    assert "--workers must be >= 1, got 0" in _one_line(capsys, ["quickstart", "--workers", "0", *out])
    assert "--minutes must be > 0" in _one_line(capsys, ["quickstart", "--minutes", "0", *out])
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()
