"""What a person sees on the console: every option described with its default, one meaning of ``--threads``,
third-party output in a log file (not on the console) unless ``--verbose``, plain lines when the output is not a
terminal, one line for the int8 blame instead of one per block, transparency handled and said once, and no
lock file left beside exported artifacts."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egeunet_deploy.console import ExportLog, third_party_to_log, written_by_us
from egeunet_deploy.main import build_parser, main
from egeunet_deploy.model import imageio

EGEUNET = [sys.executable, "-m", "egeunet_deploy"]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


# --- help ---------------------------------------------------------------------------------------------------------


def test_every_option_of_every_command_is_described_with_its_default():
    missing = []
    for name, parser in _subcommands().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help or ""
            takes_value = action.nargs != 0
            needs_default = takes_value and action.option_strings and not action.required
            if not text or (needs_default and "default" not in text and "required" not in text) or (
                    action.required and action.option_strings and "required" not in text):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}: {text!r}")
    assert missing == []


def test_blame_options_agree_on_their_defaults():
    """--blame-data said its default is the bundled sample's test pairs while --blame-split said 'val'."""
    export = _subcommands()["export"]
    helps = {a.dest: a.help for a in export._actions}
    assert "only with --blame-data" in helps["blame_split"]
    assert "--blame-split does not apply" in helps["blame_data"]


def test_threads_means_the_same_everywhere(tmp_path):
    """0 is all of this host's cores in train, drift, bench and deploy; negative counts are refused by each."""
    from egeunet_deploy.args import thread_counts
    from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS

    cores = os.cpu_count() or 1
    commands = _subcommands()
    for name in ("train", "drift", "bench", "deploy"):
        (threads,) = [a for a in commands[name]._actions if "--threads" in a.option_strings]
        assert "0 means all of this host's CPU cores" in threads.help, name
    assert thread_counts("0") == [cores] and thread_counts("1") == [1]
    with pytest.raises(ValueError, match="0 means all"):
        thread_counts(f"{cores},0")
    for argv in (["train", "--data", "x", "--threads", "-1"], ["drift", "--artifacts", "a", "--data", "d",
                                                                 "--threads", "-1"]):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(argv)
        assert e.value.code == 2
    assert build_parser().parse_args(["drift", "--artifacts", "a", "--data", "d", "--threads", "0"]).threads == 0
    out = tmp_path / "b.json"
    assert main(["bench", "--artifact", str(DEFAULT_WEIGHTS), "--threads", "0", "--runs", "2", "--warmup", "0",
                 "--e2e-runs", "1", "--json", str(out), "--no-progress"]) == 0
    assert [r["threads"] for r in json.loads(out.read_text())["results"]] == [cores]


# --- third-party output -------------------------------------------------------------------------------------------

ROUTING_SCRIPT = r"""
import sys, warnings
from pathlib import Path
from egeunet_deploy.console import third_party_to_log

def module(src, name):
    namespace = {"__name__": name}
    exec(compile(src, "<" + name + ">", "exec"), namespace)
    return namespace["speak"]

ours = module('''
import sys, warnings
def speak():
    print("our line")
    print("our warning", file=sys.stderr)
    warnings.warn("our own warning stays on the console")
''', "egeunet_deploy.fake_stage")

theirs = module('''
import logging, os, subprocess, sys, warnings
def speak():
    print("Failed to load _MLModelProxy: third-party print")
    logger = logging.getLogger("somelib")
    logger.addHandler(logging.StreamHandler())  # as coremltools does at import
    logger.warning("Detected no triton: third-party logging")
    warnings.warn("isinstance(treespec, LeafSpec) is deprecated: third-party warning", FutureWarning)
    os.write(2, b"I0000 native absl log written to file descriptor 2\\n")
    subprocess.run(["sh", "-c", "echo subprocess chatter >&2"], check=True)
''', "somelib.core")

warnings.simplefilter("always")
with third_party_to_log("test", lambda: Path(sys.argv[1]), verbose=sys.argv[2] == "verbose"):
    ours()
    theirs()
"""

NOISE = ("_MLModelProxy", "no triton", "LeafSpec", "native absl", "subprocess chatter")


def _route(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "route.py"
    script.write_text(ROUTING_SCRIPT)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "run.log"), mode], capture_output=True,
                          text=True, check=True)


def test_third_party_output_goes_to_the_log_and_ours_stays(tmp_path):
    """Python prints, logging records, warnings, native fd writes and subprocesses of another package land in the
    log; our prints and warnings reach the console; the log is moved to its destination and named once."""
    r = _route(tmp_path, "quiet")
    assert "our line" in r.stdout and "our warning" in r.stderr and "our own warning stays" in r.stderr
    for noise in NOISE:
        assert noise not in r.stdout + r.stderr, noise
    log = (tmp_path / "run.log").read_text()
    for noise in NOISE:
        assert noise in log, noise
    assert "our line" not in log and "our warning" not in log
    assert r.stderr.count(str(tmp_path / "run.log")) == 1 and "--verbose" in r.stderr


def test_verbose_shows_everything_and_writes_no_log(tmp_path):
    r = _route(tmp_path, "verbose")
    for noise in NOISE:
        assert noise in r.stdout + r.stderr, noise
    assert not (tmp_path / "run.log").exists()


def test_an_empty_log_is_not_kept(tmp_path, capfd):
    (tmp_path / "run.log").write_text("a previous run's log\n")
    with third_party_to_log("test", lambda: tmp_path / "run.log"):
        pass
    assert not (tmp_path / "run.log").exists()  # nothing to say: no file, no line, no stale log
    assert capfd.readouterr().err == ""


def _module(src: str, name: str):
    namespace = {"__name__": name}
    exec(compile(src, f"<{name}>", "exec"), namespace)
    return namespace["speak"]


def test_the_frame_walk_looks_through_plumbing():
    assert written_by_us(sys._getframe()) is False  # this test module is not the toolkit
    ours = _module("import sys\ndef speak():\n    return sys._getframe()\n", "egeunet_deploy.x")
    assert written_by_us(ours()) is True
    assert written_by_us(None) is True  # no Python caller: the interpreter's own output stays visible


# --- non-terminal output and the int8 blame -------------------------------------------------------------------------


def test_blame_lines_fold_into_one():
    lines = []
    log = ExportLog(progress=False, write=lines.append)
    log("onnx int8: exporting ...")
    for block in ("preprocess", "encoder1", "encoder2"):
        log(f"int8 blame: quantizing only {block}")
    log("onnx int8: egeunet_int8.onnx (411.8 KB, 42.1s)")
    assert lines[0] == "onnx int8: exporting ..." and lines[2].startswith("onnx int8: egeunet_int8.onnx")
    assert lines[1].startswith("int8 blame: 3 blocks quantized one at a time and ranked")
    assert len(lines) == 3


@pytest.mark.slow
def test_export_to_a_file_prints_plain_lines_and_leaves_no_lock(tmp_path):
    """A real int8 export with its blame ranking, output to a file (not a terminal): plain lines, no escape codes or
    carriage returns, one blame line, the third-party chatter in export.log, no .manifest.json.lock."""
    out = tmp_path / "art"
    with open(tmp_path / "console.txt", "w") as f:
        rc = subprocess.run([*EGEUNET, "export", "--target", "onnx", "--precision", "int8", "--out", str(out)],
                            stdout=f, stderr=subprocess.STDOUT).returncode
    text = (tmp_path / "console.txt").read_text()
    assert rc == 0, text
    assert "\x1b" not in text and "\r" not in text
    assert "quantizing only" not in text and text.count("int8 blame:") == 1
    assert (out / "egeunet_int8.onnx").is_file() and (out / "manifest.json").is_file()
    assert not (out / ".manifest.json.lock").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    if (out / "export.log").exists():
        assert f"{out / 'export.log'}" in text


def test_evaluate_to_a_pipe_has_no_progress_bars(sample_dir):
    result = subprocess.run([*EGEUNET, "evaluate", "--data", str(sample_dir), "--split", "test"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    assert "\r" not in both and "\x1b" not in both and "img/s" not in both
    assert "DSC" in result.stdout


def test_evaluate_on_a_flat_folder_without_masks_names_no_split(tmp_path, sample_dir, capsys):
    (tmp_path / "noMasks" / "images").mkdir(parents=True)
    image = next((sample_dir / "test" / "images").iterdir())
    (tmp_path / "noMasks" / "images" / image.name).write_bytes(image.read_bytes())
    assert main(["evaluate", "--data", str(tmp_path / "noMasks"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "[test]" not in err and "no masks" in err and "flat layout has no splits" in err


# --- transparency -------------------------------------------------------------------------------------------------


def _rgba(tmp_path: Path, name: str, alpha: int) -> Path:
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[..., 0] = 200  # a red-brown patch ...
    rgba[..., 1] = 60
    rgba[..., 3] = alpha
    rgba[:, :16, 3] = 0  # ... with a fully transparent band
    path = tmp_path / name
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def test_transparency_is_composited_on_grey_and_said_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(imageio, "_alpha_noted", False)
    first = np.asarray(imageio.read_rgb(_rgba(tmp_path, "a.png", 255)))
    assert (first[:, :16] == 128).all()  # transparent: neutral grey, not black (was 0, 0, 0)
    assert (first[:, 16:] == (200, 60, 0)).all()  # opaque pixels unchanged
    half = np.asarray(imageio.read_rgb(_rgba(tmp_path, "b.png", 128)))
    assert np.abs(half[0, 20].astype(int) - (164, 94, 64)).max() <= 1  # a * colour + (1 - a) * grey
    err = capsys.readouterr().err
    assert err.count("transparent pixels") == 1 and "a.png" in err and "(128, 128, 128)" in err


def test_an_opaque_rgba_file_is_read_silently(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(imageio, "_alpha_noted", False)
    rgba = np.full((8, 8, 4), 255, np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    assert (np.asarray(imageio.read_rgb(tmp_path / "opaque.png")) == 255).all()
    assert capsys.readouterr().err == ""


def test_predict_says_what_it_does_with_alpha(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(imageio, "_alpha_noted", False)
    photos = tmp_path / "photos"
    photos.mkdir()
    _rgba(photos, "one.png", 255)
    _rgba(photos, "two.png", 200)
    assert main(["predict", str(photos), "--out", str(tmp_path / "masks"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("composited on neutral grey") == 1 and "wrote 2 mask(s)" in captured.out
    assert (tmp_path / "masks" / "two_mask.png").is_file()
