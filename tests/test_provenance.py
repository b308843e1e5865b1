"""The git commit every recipe records in metrics.json (llmrec_ft/provenance.py)."""

import subprocess

from llmrec_ft.provenance import git_commit


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_short_hash_dirty_only_for_tracked_changes_and_none_outside_a_checkout(tmp_path, monkeypatch):
    assert git_commit(tmp_path) is None  # not a checkout: a wheel install
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "pkg")
    _git(repo, "commit", "-q", "-m", "first")
    short = _git(repo, "rev-parse", "--short", "HEAD")
    assert git_commit(repo / "pkg") == short
    (repo / "runs").mkdir()
    (repo / "runs" / "metrics.json").write_text("{}")
    assert git_commit(repo / "pkg") == short  # untracked outputs do not make the tree dirty
    assert git_commit(repo / "runs") is None  # a folder the checkout does not track (a venv inside a project)
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    assert git_commit(repo / "pkg") == f"{short}-dirty"
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert git_commit(repo / "pkg") is None  # no git executable: None, never an error
