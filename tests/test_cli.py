"""``llmrec-ft`` subcommands answer ``--help`` with their own help."""

import pytest

from llmrec_ft.cli import main


def test_data_help_is_the_data_commands_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: llmrec-ft data") and "prepare" in out
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "--help"])
    assert exit_.value.code == 0 and "--min_user_interactions" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepair"])
    assert exit_.value.code == 2 and "invalid choice: 'prepair'" in capsys.readouterr().err
