"""Every verb and every option of the coalition command says what it is for: an operator
reads ``--help``, not the source."""

from __future__ import annotations

import argparse

from coalition.cli.main import _parser


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions if choice.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    missing.append(f"{path} {name} (the verb)")
                missing += _undocumented(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction) and (
            not action.help
        ):
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_verb_and_option_has_help() -> None:
    assert _undocumented(_parser(), "coalition") == []


def test_the_check_finds_an_option_without_help() -> None:
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers()
    verb = sub.add_parser("do", help="does")
    verb.add_argument("--quietly")
    sub.add_parser("bare")
    assert sorted(_undocumented(parser, "x")) == ["x bare (the verb)", "x do --quietly"]
