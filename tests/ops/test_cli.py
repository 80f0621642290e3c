"""The `tenure` command explains itself and keeps exit codes a script can rely on."""

from __future__ import annotations

import argparse

import pytest

from tenure_cli.main import build_parser, main


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_has_a_summary_and_a_description() -> None:
    parser = build_parser()
    assert "Exit codes" in (parser.epilog or "")
    commands = _subcommands(parser)
    assert {"topics", "migrate", "token", "simulate", "import", "churn-report", "dlq",
            "contracts", "eval", "bench"} <= set(commands)
    for name, sub in commands.items():
        assert _summaries(parser).get(name), f"`tenure --help` lists {name} without a summary"
        assert sub.description and len(sub.description) > 60, f"`tenure {name} --help` is bare"
        for nested_name in _subcommands(sub):
            assert _summaries(sub).get(nested_name), f"`tenure {name} --help`: {nested_name}?"


def _summaries(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help for a in action._choices_actions}
    return {}


def test_dlq_options_are_explained() -> None:
    dlq = _subcommands(build_parser())["dlq"]
    for name, sub in _subcommands(dlq).items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"tenure dlq {name} {action.option_strings[0]} lacks help"
        assert "Exit codes" in (sub.description or "")


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dlq", "replay", "--no-such-option"])
    assert exc.value.code == 2
    assert main(["dlq", "replay"]) == 2
    assert "--all" in capsys.readouterr().err


def test_an_unreachable_database_exits_4(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TENURE_DATABASE_URL",
                       "postgresql+asyncpg://tenure:tenure@127.0.0.1:1/tenure")
    assert main(["migrate", "profile"]) == 4
    assert "cannot reach the infrastructure" in capsys.readouterr().err


def test_a_command_loads_only_its_own_module() -> None:
    # Start-up stays quick: `tenure dlq ...` does not import the evaluation's numerical stack.
    import subprocess
    import sys

    code = ("import sys; from tenure_cli.main import main; rc = main(['dlq', 'replay']); "
            "print(rc, 'tenure_cli.eval_cmd' in sys.modules, 'tenure_cli.dlq' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["2", "False", "True"], out.stdout + out.stderr
