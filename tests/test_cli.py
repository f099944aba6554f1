"""The CLI: --help needs no optional backend; bad input is one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vgg_deploy.cli import app

runner = CliRunner()


COMMANDS = ("finetune", "prune", "export", "benchmark", "predict", "serve", "sample-data", "demo")


def test_help_lists_every_command():
    registered = {command.name for command in app.registered_commands}
    assert registered == set(COMMANDS)  # a new command is added here, and so checked below
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[1] for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert set(COMMANDS) <= listed, listed


def test_version():
    from vgg_deploy import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"vgg-deploy {__version__}"


def test_python_dash_m_works_like_the_script_and_imports_no_runtime_for_help():
    """`python -m vgg_deploy --help`, and what that child process imported (not what pytest has)."""
    result = subprocess.run([sys.executable, "-m", "vgg_deploy", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "finetune" in result.stdout
    code = ("import runpy, sys\nsys.argv = ['vgg-deploy', '--help']\ntry:\n"
            "    runpy.run_module('vgg_deploy', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorrt', 'openvino', 'onnxruntime', 'torch'}))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "args,message",
    [
        (["finetune", "{tmp}/missing", "--out", "{tmp}/run"], "does not exist"),
        (["finetune", "{tiny}", "--out", "{tmp}/run", "--weights", "{tmp}/none.safetensors"], "does not exist"),
        (["finetune", "{tiny}", "--out", "{tmp}/run", "--weights", "imagenet", "--device", "cuda"], "CUDA"),
        (["finetune", "{tiny}", "--out", "{tmp}/run", "--weights", "{tmp}"], "is a folder but not a finetune run"),
        (["finetune", "{tiny}", "--out", "{tmp}/run", "--val-split", "0.6", "--test-split", "0.5"],
         "together must stay below 1"),
        (["export", "{tmp}/norun"], "does not exist"),
        (["benchmark", "{tmp}/norun"], "does not exist"),
        (["benchmark", "{tmp}", "--batch-sizes", "1,x"], "--batch-sizes must be"),
        (["benchmark", "{tmp}"], "model.json is missing"),
        (["predict", "{tmp}/norun", "{tiny}"], "does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_an_exit_code(tmp_path, tiny_data, args, message, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = [a.format(tmp=tmp_path, tiny=tiny_data) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output + result.stderr


def test_sample_data_is_deterministic(tmp_path):
    from vgg_deploy.sample_data import CLASSES

    for name in ("a", "b"):
        assert runner.invoke(app, ["sample-data", str(tmp_path / name), "--images-per-class", "3"]).exit_code == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 3 * len(CLASSES)
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_sample_families_draw_their_own_classes(tmp_path):
    from vgg_deploy.cli.sample_data import Family
    from vgg_deploy.sample_data import FAMILIES

    assert [f.value for f in Family] == list(FAMILIES)
    for family in FAMILIES:
        out = tmp_path / family
        result = runner.invoke(app, ["sample-data", str(out), "--images-per-class", "2", "--family", family, "--size", "32"])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == sorted(FAMILIES[family])
    # Families share no class, and no two families draw the same picture.
    names = [n for classes in FAMILIES.values() for n in classes]
    assert len(names) == len(set(names))
    pictures = {p.read_bytes() for p in tmp_path.rglob("*.png")}
    assert len(pictures) == 2 * len(names)


def test_a_missing_runtime_extra_is_one_line_naming_the_install(capsys):
    import pytest
    import typer

    from vgg_deploy.cli.errors import user_errors

    with pytest.raises(typer.Exit) as stopped:
        with user_errors():
            raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
    assert stopped.value.exit_code == 1
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "onnxruntime is not installed" in message and "vgg-deploy[cpu]" in message
    with pytest.raises(ModuleNotFoundError):  # anything else missing is a bug, not the install's gap
        with user_errors():
            raise ModuleNotFoundError("No module named 'numpyy'", name="numpyy")
