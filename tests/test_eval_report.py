"""Reports of ``python -m perface.eval``: options, warnings for small sets, plots that read well."""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch

from perface.commands import make_parser


def _parser(module):
    parser = make_parser("python -m perface.eval x", "test")
    module.add_arguments(parser)
    return parser


@pytest.mark.parametrize("name", ["triplets", "anonymization", "attributes"])
def test_every_option_has_help_a_default_shown_once_and_the_quiet_flag(name):
    import importlib

    module = importlib.import_module(f"perface.eval.{name}")
    parser = _parser(module)
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert [a.dest for a in options if not (a.help or "").strip()] == []
    assert any(a.option_strings == ["-q", "--quiet"] for a in options)
    assert not any("--no-progress" in a.option_strings for a in options)
    assert "``" not in parser.format_help()
    formatter = parser.formatter_class(prog=parser.prog)
    for a in options:  # a default is stated, once
        text = formatter._get_help_string(a).lower()
        assert text.count("default:") <= 1, a.dest
        if a.default is not None and a.default is not False and a.nargs != 0:
            assert "default" in text, a.dest  # 0 included: '--workers' says '(default: 0)'


def _task(values, seed=0):
    from perface.eval.attributes import _task_result
    from perface.eval.report import Notes

    torch.manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(len(values), 8), dim=1)
    notes = Notes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _task_result(emb, values, 0.95, 0, notes, "sface, task 'age'")
    return out, notes.items, [str(w.message) for w in caught]


def test_attribute_group_too_small_for_an_interval_is_warned_and_marked():
    values = ["young"] * 6 + ["old"] * 2  # 'old': each member has 1 other, no interval
    out, notes, printed = _task(values)
    assert out["small_groups"] == ["old"]
    old = next(g for g in out["groups"] if g["group"] == "old")
    assert old["recall"] == 0.0  # never assigned to its own members, as the warning says
    (msg,) = [n for n in notes if "'old'" in n]
    assert "has 2 image(s)" in msg and "at least 3" in msg and "recall 0" in msg
    assert msg in printed


def test_attribute_groups_of_three_are_not_flagged():
    out, notes, _ = _task(["a"] * 3 + ["b"] * 3)
    assert out["small_groups"] == [] and not any("group 'a'" in n or "group 'b'" in n for n in notes)
    assert any("only 6 labelled images" in n for n in notes)  # the task itself is small


def test_attribute_report_marks_small_groups_and_shows_signature():
    from perface.eval.attributes import _markdown

    out, notes, _ = _task(["young"] * 6 + ["old"] * 2)
    report = {
        "images": "imgs",
        "labels": "labels.csv",
        "confidence": 0.95,
        "files": ["x"] * 8,
        "tasks": ["age"],
        "warnings": notes,
        "models": [
            {
                "model": "sface",
                "perceptual": False,
                "signature": "SIG",
                "n_ok": 8,
                "failures": [],
                "tasks": {"age": out},
            }
        ],
    }
    text = _markdown(report)
    assert "| age | old (*too small*) | 2 |" in text and "| age | young | 6 |" in text
    assert "Metric signature: `SIG`" in text and "## Warnings" in text


def test_triplet_rows_below_twenty_are_warned_about():
    from perface.eval.triplets import format_table, warn_small

    rows = [
        {
            "model": "sface",
            "checkpoint": "sface",
            "template": "arcface",
            "align": "none",
            "group": g,
            "accuracy": 0.5,
            "ci_low": 0.2,
            "ci_high": 0.8,
            "n": n,
            "failed": 0,
            "signature": "SIG",
        }
        for g, n in (("all", 25), ("hard", 7))
    ]
    with pytest.warns(UserWarning, match=r"only 7 triplets scored for sface, group 'hard'"):
        messages = warn_small(rows)
    assert len(messages) == 1
    assert "- sface: `SIG`" in format_table(rows) and "SIG" in format_table(rows, "csv")


def test_count_axis_has_whole_number_ticks_and_thresholds_are_labelled():
    from perface._plotting import pyplot
    from perface.eval.report import count_axis, threshold_lines

    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        ax.hist([0.1, 0.2, 0.2], bins=4)  # counts 0..2: matplotlib's default ticks are 0, 0.25, 0.5, ...
        default = ax.get_yticks()
        assert any(t != int(t) for t in default)
        count_axis(ax.yaxis)
        assert all(float(t).is_integer() for t in ax.get_yticks())
        threshold_lines(ax, [0.3, 0.45], "thresholds")
        assert [t.get_text() for t in ax.texts] == ["0.3", "0.45"]
        assert ax.get_legend_handles_labels()[1] == ["thresholds: 0.3, 0.45"]
    finally:
        plt.close(fig)
