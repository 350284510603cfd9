import subprocess
import sys

import pytest

from spear_mm.cli.main import VERBS


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "spear_mm.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_six_verbs():
    res = _cli("--help")
    assert res.returncode == 0
    for verb in ("train", "analyze", "merge", "eval", "sweep", "run"):
        assert f"  {verb} " in res.stdout
    assert set(VERBS) == {"train", "analyze", "merge", "eval", "sweep", "run"}


def test_unknown_verb_exit_2():
    res = _cli("frobnicate")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "unknown verb" in res.stderr


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_verb_help(verb):
    res = _cli(verb, "--help")
    assert res.returncode in (0, 2), res.stderr
    if res.returncode == 2:
        assert "not built yet" in res.stderr
    else:
        assert verb in res.stdout
