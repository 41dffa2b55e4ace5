"""Every setting is documented where users look: the README's table (generated from the settings
classes) is up to date, and every command's --help lists each of its settings."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fedmq.cli import main
from fedmq.settings_doc import COMMANDS, settings_table, with_table
from tests.deploy_support import ROOT


def test_the_readme_settings_table_is_up_to_date() -> None:
    readme = (ROOT / "README.md").read_text()
    assert with_table(readme) == readme, "run `python -m fedmq.settings_doc` to regenerate it"


def test_the_table_has_a_row_for_every_setting_of_every_command() -> None:
    table = settings_table()
    for cls in COMMANDS.values():
        for name in cls.model_fields:
            assert f"| `FEDMQ_{name.upper()}` |" in table


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_lists_its_settings(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in COMMANDS[command].model_fields:
        assert f"--{name.replace('_', '-')}" in result.output
        assert f"FEDMQ_{name.upper()}" in result.output
