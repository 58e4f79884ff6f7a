"""The trainer: the paper's loss, exact resume after SIGKILL, Ctrl-C, atomic checkpoints, DDP on 2 CPU processes."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from egeunet_deploy.model import DS_WEIGHTS, create_model
from egeunet_deploy.model.augment import augment_batch, photometric
from egeunet_deploy.model.checkpoint import sha256_file
from egeunet_deploy.model.ship import _recipe, ship, write_card
from egeunet_deploy.model.train import bce_dice, init_provenance, recipe_loss

EGEUNET = [sys.executable, "-m", "egeunet_deploy"]


def official_bce_dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """utils.BceDiceLoss of the official code, on probabilities."""
    n = prob.shape[0]
    p, t = prob.view(n, -1), target.view(n, -1)
    bce = torch.nn.BCELoss()(p, t)
    dice = 1 - ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / n
    return bce + dice


def test_loss_equals_official_gt_bce_dice():
    torch.manual_seed(0)
    net = create_model("egeunet")
    with torch.no_grad():  # keep the sigmoid unsaturated: there the official BCELoss clamps log() at -100 and
        for name, p in net.named_parameters():  # stops the gradient, which the logits form deliberately does not
            if name.startswith(("final", "gt_conv")) and p.dim() > 1:
                p.mul_(0.01)
    x = torch.rand(2, 3, 64, 64) * 255
    y = (torch.rand(2, 1, 64, 64) > 0.7).float()
    ds_logits, logits = net.forward_logits(x)
    ds_probs, prob = net(x)
    official = official_bce_dice(prob, y) + sum(
        w * official_bce_dice(p, y) for w, p in zip((0.1, 0.2, 0.3, 0.4, 0.5), ds_probs, strict=True))
    torch.testing.assert_close(recipe_loss(ds_logits, logits, y), official, atol=1e-5, rtol=1e-5)
    assert DS_WEIGHTS == (1.0, 0.5, 0.4, 0.3, 0.2, 0.1)
    torch.testing.assert_close(bce_dice(logits, y), official_bce_dice(prob, y), atol=1e-6, rtol=1e-6)


def test_fast_recipe_loss_equals_plain_value_and_gradient():
    """recipe_loss(fast=True) (matrix upsampling + hand-written BCE/Dice backward) is the plain loss, gradients too."""
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(3, 1, 64, 64, generator=g) > 0.6).float()
    y[0] = torch.rand(1, 64, 64, generator=g)  # soft targets too: the formula must not assume {0, 1}
    logits = (torch.randn(3, 1, 64, 64, generator=g) * 6).requires_grad_()  # some saturated
    ds = [(torch.randn(3, 1, s, s, generator=g) * 3).requires_grad_() for s in (2, 4, 8, 16, 32)]
    plain = recipe_loss(ds, logits, y, fast=False)
    grads_plain = torch.autograd.grad(plain, [logits, *ds])
    fast = recipe_loss(ds, logits, y, fast=True)
    grads_fast = torch.autograd.grad(fast, [logits, *ds])
    torch.testing.assert_close(fast, plain, atol=1e-6, rtol=1e-6)
    for a, b in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-4)


_REUSED_BUFFERS_SCRIPT = """
import resource, sys, torch
from egeunet_deploy.model.train import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    sys.exit(3)
def one_round():  # three 40 MB buffers alive at once, then freed
    bufs = [torch.ones(10 << 20) for _ in range(3)]
    return sum(float(b[0]) for b in bufs)
for _ in range(3):
    one_round()
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    one_round()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_stops_page_faults_on_reused_buffers():
    """After keep_freed_memory(), large buffers freed and allocated again reuse their pages; by default glibc maps
    anything over 32 MB afresh, so each such allocation faults in all of its pages again (30,723 page faults per
    round of this loop here). Run in a fresh process, as `egeunet train` is: in the test process the heap's state
    depends on the tests before (one full-suite run saw this fail in-process, unexplained)."""

    def faults(mode: str) -> list[int]:
        run = subprocess.run([sys.executable, "-c", _REUSED_BUFFERS_SCRIPT, mode], env=_env(), capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return [int(v) for v in run.stdout.split()]

    # Per round, not summed: a full-suite run once saw one round of the kept mode re-fault one buffer (10,240 pages,
    # the heap grew once more); reuse is the rule the trainer relies on, and without the setting it never happens.
    kept, default = faults("keep"), faults("default")
    assert sorted(kept)[len(kept) // 2] < 1024, f"page faults per round of three reused 40 MB buffers: {kept}"
    assert min(default) > 10_000, default  # each round maps its buffers afresh (one is 10,240 pages)


def test_augmentation_draws_per_sample_and_keeps_pairs_aligned():
    images = torch.zeros(16, 64, 64, 3, dtype=torch.uint8)
    images[:, 8:24, 8:40] = 200  # an off-centre bright block
    masks = (images[..., 0] > 0).to(torch.uint8)
    x, y = augment_batch(images, masks, torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 64, 64) and y.shape == (16, 1, 64, 64)
    bright = (x[:, 0] > 127).float()
    assert torch.equal(bright, y[:, 0])  # image and mask move together (nearest sampling)
    positions = {tuple(torch.nonzero(y[i, 0]).float().mean(0).round().tolist()) for i in range(16)}
    assert len(positions) > 4  # different flips / angles per sample, not one angle per run


def test_strong_augmentation_keeps_pairs_aligned_and_the_contract_range():
    images = torch.zeros(16, 64, 64, 3, dtype=torch.uint8)
    images[:, 16:40, 12:44] = torch.tensor([200, 120, 90], dtype=torch.uint8)  # a coloured block on black
    masks = (images[..., 0] > 0).to(torch.uint8)
    x, y = augment_batch(images, masks, torch.Generator().manual_seed(0), strong=True)
    assert x.shape == (16, 3, 64, 64) and y.shape == (16, 1, 64, 64)
    assert torch.equal(x.sum(1) > 1.0, y[:, 0] > 0)  # zoom / shift move image and mask together
    flat = x.reshape(16, -1)
    assert torch.allclose(flat.amin(1), torch.zeros(16)) and torch.allclose(flat.amax(1), torch.full((16,), 255.0))
    areas = y.sum((1, 2, 3))
    assert areas.max() > 1.2 * areas.min()  # zoom differs per sample (rotation keeps area up to the block's edges)
    block = [x[i, :, y[i, 0] > 0].mean(1) for i in range(16)]
    ratios = {round((b[1] / b[0]).item(), 2) for b in block}
    assert len(ratios) > 8  # a colour cast per sample: the min-max stretch would cancel a global one


def test_strong_photometric_is_the_identity_at_mid_draws_and_paper_stream_is_unchanged():
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    out = photometric(images, torch.full((4, 5), 0.5))
    assert torch.allclose(out, images.float(), atol=1e-3)
    assert not torch.allclose(photometric(images, torch.zeros(4, 5)), images.float(), atol=1.0)
    masks = (images[..., 0] > 127).to(torch.uint8)
    paper = augment_batch(images, masks, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    strong = augment_batch(images, masks, gen, strong=True)
    assert not torch.equal(paper[0], strong[0])
    # strong draws after the paper's four numbers per sample, so a paper run's random stream is untouched
    replay = torch.Generator().manual_seed(5)
    torch.rand(4, 4, generator=replay)
    torch.rand(4, 8, generator=replay)
    assert torch.equal(torch.rand(3, generator=replay), torch.rand(3, generator=gen))


def _tiny_dataset(sample_dir: Path, root: Path) -> Path:
    for split, n in (("train", 8), ("val", 4)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for img in sorted((sample_dir / "train" / "images").iterdir())[:n]:
            shutil.copy(img, root / split / "images")
            shutil.copy(sample_dir / "train" / "masks" / f"{img.stem}_segmentation.jpg", root / split / "masks")
    return root


def _train_cmd(data: Path, out: Path, epochs: int) -> list[str]:
    return [*EGEUNET, "train", "--data", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", "4",
            "--threads", "1", "--no-progress"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sample_dir):
    return _tiny_dataset(sample_dir, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    subprocess.run(_train_cmd(tiny, out, 3), check=True, env=_env(), capture_output=True, text=True)
    return out


def test_run_writes_checkpoints_logs_and_curves(uninterrupted):
    for name in ("last.pt", "best.pt", "log.json", "log.csv", "curves.png", "config.json"):
        assert (uninterrupted / name).is_file(), name
    log = json.loads((uninterrupted / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[0]["lr"] == pytest.approx(1e-3) and log[1]["lr"] < log[0]["lr"]  # cosine schedule steps per epoch
    assert not list(uninterrupted.glob(".*.tmp"))


def kill_in_second_epoch(cmd: list[str], out: Path) -> list[dict]:
    """Start a training run, SIGKILL it once its first epoch is logged; returns the epochs it completed."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "log.json").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return json.loads((out / "log.json").read_text())


def test_resume_after_sigkill_mid_epoch_is_exact(tiny, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    done = kill_in_second_epoch(_train_cmd(tiny, out, 3), out)
    assert done and done[-1]["epoch"] < 3, "the kill must land before the run ends"
    torch.load(out / "last.pt", weights_only=True)  # the checkpoint survived the kill intact

    resumed = subprocess.run([*EGEUNET, "train", "--resume", str(out), "--threads", "1", "--no-progress"],
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {out} at epoch {done[-1]['epoch'] + 1}" in resumed.stdout
    a = torch.load(uninterrupted / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert [r["val_dsc"] for r in a["history"]] == [r["val_dsc"] for r in b["history"]]


def test_sigterm_is_handled_like_ctrl_c(tiny, tmp_path):
    out = tmp_path / "term"
    proc = subprocess.Popen(_train_cmd(tiny, out, 50), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "log.json").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"egeunet train --resume {out}" in stdout
    torch.load(out / "last.pt", weights_only=True)


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tiny, uninterrupted, tmp_path):
    again = subprocess.run(_train_cmd(tiny, uninterrupted, 3), env=_env(), capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    nothing = subprocess.run([*EGEUNET, "train", "--resume", str(tmp_path / "none")], env=_env(),
                             capture_output=True, text=True)
    assert nothing.returncode == 2 and "nothing to resume" in nothing.stderr


def test_ddp_two_cpu_processes(tiny, tmp_path):
    out = tmp_path / "ddp"
    # --standalone: torchrun binds its own free port (a port picked here could be taken before torchrun binds it)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "egeunet_deploy", "train", "--data", str(tiny), "--out", str(out),
           "--epochs", "2", "--batch-size", "2", "--threads", "1", "--no-progress"]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 process(es) x 1 thread(s)" in result.stdout
    assert "DDP: 2 replicas in sync" in result.stdout
    log = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    state = torch.load(out / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["state_dict"])  # loadable by a single process


def test_training_moves_the_weights_and_learns(uninterrupted):
    log = json.loads((uninterrupted / "log.json").read_text())
    assert log[-1]["loss"] < log[0]["loss"]
    state = torch.load(uninterrupted / "last.pt", weights_only=True)
    torch.manual_seed(42)  # the trainer's seed: this is the run's initialisation
    init = create_model("egeunet").state_dict()
    moved = [k for k, v in state["state_dict"].items() if not torch.equal(v, init[k])]
    assert len(moved) == len(init)


@pytest.fixture(scope="module")
def finetuned(tiny, uninterrupted, tmp_path_factory) -> dict:
    """A copy of the 3-epoch run, a 1-epoch fine-tune of its best.pt, then the copy trained on for a 4th epoch."""
    root = tmp_path_factory.mktemp("finetune")
    parent = root / "parent"
    shutil.copytree(uninterrupted, parent)
    start = parent / "best.pt"
    start_ckpt = torch.load(start, weights_only=True)  # before the parent trains on (it may replace best.pt)
    facts = {"sha256": sha256_file(start), "epoch": start_ckpt["epoch"], "start_state": start_ckpt["state_dict"]}
    out = root / "finetune"
    cmd = [*_train_cmd(tiny, out, 1), "--init-weights", str(start), "--lr", "1e-12", "--augment", "strong"]
    first = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    tuned = torch.load(out / "last.pt", weights_only=True)
    parent_on = subprocess.run([*EGEUNET, "train", "--resume", str(parent), "--epochs", "4", "--threads", "1",
                                "--no-progress"], env=_env(), capture_output=True, text=True)
    assert parent_on.returncode == 0, parent_on.stderr
    return {"start": start, "out": out, "first": first, "tuned": tuned, **facts}


def test_fine_tuning_starts_from_given_weights_and_resume_keeps_the_recipe(finetuned):
    start, out, tuned = finetuned["start"], finetuned["out"], finetuned["tuned"]
    assert finetuned["first"].returncode == 0, finetuned["first"].stderr
    assert f"starting from the weights in {start.resolve()}" in finetuned["first"].stdout
    assert tuned["train_cfg"]["augment"] == "strong" and tuned["train_cfg"]["lr"] == 1e-12
    # the start is recorded when the fine-tune starts: file, sha256, epoch and the parent's recipe and progress
    assert tuned["started_from"] == {"file": str(start), "sha256": finetuned["sha256"], "epoch": finetuned["epoch"],
                                     "augment": "paper", "lr": 1e-3, "t_max": 50, "epochs_run": 3}
    resumed = subprocess.run([*EGEUNET, "train", "--resume", str(out), "--epochs", "2", "--threads", "1",
                              "--no-progress"], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    again = torch.load(out / "last.pt", weights_only=True)
    assert again["epoch"] == 2 and again["train_cfg"]["augment"] == "strong" and again["train_cfg"]["lr"] == 1e-12
    for key, value in finetuned["start_state"].items():  # a learning rate of 1e-12 leaves the weights where they were
        assert torch.allclose(again["state_dict"][key].float(), value.float(), atol=1e-6), key
    # the parent trained on meanwhile (4 epochs now), but the record still describes the weights the fine-tune used
    assert torch.load(start.parent / "last.pt", weights_only=True)["epoch"] == 4
    assert again["started_from"] == tuned["started_from"]

    # the model card of such a run names both stages, from that record
    training = {"epoch": 2, "epochs_run": 2, "epochs_planned": 2, **{k: again["train_cfg"][k] for k in (
        "seed", "batch_size", "lr", "weight_decay", "t_max", "eta_min", "augment")},
        "started_from": again["started_from"]}
    card = " ".join(_recipe(training).split())  # wrapped at 118 columns
    assert "Fine-tuned from it with `egeunet train --init-weights ... --augment strong`" in card
    assert (f"epoch {finetuned['epoch']} (`{start}`, sha256 {finetuned['sha256'][:12]}), the best by validation DSC "
            "of the 3 epochs") in card
    legacy = {k: v for k, v in again["started_from"].items() if k not in ("sha256", "file")}
    assert "(`runs/parent/best.pt`)" in " ".join(_recipe({**training, "started_from": {
        **legacy, "file": "parent/best.pt"}}).split())  # records written before the sha256 was kept
    assert _recipe({**training, "started_from": None}).startswith("The paper's:")


def test_provenance_of_weights_without_a_recipe(tmp_path):
    """An official-repository state_dict has no epoch and no recipe: the record says so, and the card too."""
    bare = tmp_path / "official.pth"
    torch.save(create_model("egeunet").state_dict(), bare)
    record = init_provenance(bare)
    assert record == {"file": str(bare), "sha256": sha256_file(bare), "epoch": None}
    text = " ".join(_recipe({"epoch": 5, "epochs_run": 5, "epochs_planned": 5, "seed": 0, "batch_size": 8,
                             "lr": 1e-4, "weight_decay": 1e-2, "t_max": 5, "eta_min": 1e-5, "augment": "paper",
                             "started_from": record}).split())
    assert f"1. Weights made outside this toolkit (`{bare}`, sha256 {record['sha256'][:12]}); no recipe" in text
    assert "Fine-tuned from it with `egeunet train --init-weights ... --augment paper`, learning rate 0.0001" in text


def test_ship_and_card_only_rewrite(finetuned, tiny, tmp_path):
    """``ship`` writes weights + card; ``--card-only`` rewrites the same card and leaves the weights byte-identical."""
    data = tmp_path / "data"
    data.mkdir()
    for split, source in (("train", "train"), ("val", "val"), ("test", "val")):
        (data / split).symlink_to(tiny / source, target_is_directory=True)
    weights, card = tmp_path / "w.pt", tmp_path / "CARD.md"
    metrics = ship(finetuned["out"], data, out=weights, card=card)
    shipped = torch.load(weights, weights_only=True)
    assert shipped["training"]["started_from"]["epochs_run"] == 3  # not the parent's 4 of today
    assert metrics["test"]["pooled"]["dsc"] == shipped["metrics"]["test"]["pooled"]["dsc"]
    text = card.read_text()
    assert "## Where the errors are" in text and "| train | 8 |" in text and "| val | 4 |" in text
    sha = sha256_file(weights)
    card2 = tmp_path / "CARD2.md"
    analysis = write_card(data, weights=weights, card=card2)
    assert sha256_file(weights) == sha and card2.read_text() == text
    for r in analysis["test"]["by_lesion_size"]:  # every non-empty stratum is a row of the card
        if r["n"]:
            assert (f"| test | {r['name']} | {r['n']} | {100 * r['pooled']['dsc']:.1f} | "
                    f"{100 * r['per_image_dsc']:.1f} | {r['missed_pixels']:,} | {r['false_pixels']:,} |") in text
    other = tmp_path / "other"
    other.mkdir()
    for split, source in (("train", "train"), ("val", "val"), ("test", "train")):
        (other / split).symlink_to(tiny / source, target_is_directory=True)
    with pytest.raises(ValueError, match=r"\[test\]: pooled DSC .* recorded in"):
        write_card(other, weights=weights, card=tmp_path / "CARD3.md")
    assert not (tmp_path / "CARD3.md").exists()


def test_unknown_augmentation_and_unusable_start_weights_are_refused(tiny, tmp_path):
    result = subprocess.run([*_train_cmd(tiny, tmp_path / "bad", 1), "--augment", "heavy"], env=_env(),
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--augment 'heavy' is unknown; choose paper, strong" in result.stderr
    not_weights = tmp_path / "notes.pt"
    not_weights.write_text("not a checkpoint")
    result = subprocess.run([*_train_cmd(tiny, tmp_path / "bad", 1), "--init-weights", str(not_weights)], env=_env(),
                            capture_output=True, text=True)
    assert result.returncode == 2 and f"{not_weights}: not a readable PyTorch weights file" in result.stderr
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_impossible_settings_are_refused_before_any_work(capsys, tiny, uninterrupted, tmp_path):
    from egeunet_deploy.main import main

    out = tmp_path / "never"
    code = main(["train", "--data", str(tiny), "--out", str(out), "--epochs", "0", "--batch-size", "0", "--lr", "-1",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    for part in ("--epochs 0 must be at least 1", "--batch-size 0 must be at least 1", "--lr -1.0 must be positive"):
        assert part in err, err

    run = tmp_path / "done"
    shutil.copytree(uninterrupted, run)  # 3 epochs run, 3 planned
    before = sha256_file(run / "last.pt")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    assert f"--epochs 2 is below the 3 epochs {run} has already run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # nothing left to do: says so, touches nothing
    assert f"{run} has already run all 3 epochs; give --epochs N (more than 3) to extend it" in capsys.readouterr().out
    assert sha256_file(run / "last.pt") == before


def test_skip_bad_lists_what_it_skipped_in_both_splits(capsys, tiny, tmp_path):
    from egeunet_deploy.main import main

    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    for split in ("train", "val"):
        mask = next((data / split / "masks").iterdir())
        (data / split / "images" / f"broken_{split}.jpg").write_bytes(b"not a jpeg")
        shutil.copy(mask, data / split / "masks" / f"broken_{split}_segmentation.jpg")
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4",
                 "--threads", "1", "--skip-bad", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    for split in ("train", "val"):
        assert f"skipped {data / split / 'images' / f'broken_{split}.jpg'}" in out, out
    assert "on 8 train images, validating on 4 val images" in out


def test_resume_from_a_damaged_or_weights_only_last_pt_is_refused(capsys, uninterrupted, tmp_path):
    from egeunet_deploy.main import main

    damaged = tmp_path / "damaged"
    shutil.copytree(uninterrupted, damaged)
    data = (damaged / "last.pt").read_bytes()
    (damaged / "last.pt").write_bytes(data[: len(data) // 2])  # e.g. a copy cut short by a full disk
    assert main(["train", "--resume", str(damaged), "--no-progress"]) == 2
    assert f"{damaged / 'last.pt'}: not a readable PyTorch weights file" in capsys.readouterr().err
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    shutil.copy(uninterrupted / "best.pt", weights_only / "last.pt")
    assert main(["train", "--resume", str(weights_only), "--no-progress"]) == 2
    assert "holds weights but no training state" in capsys.readouterr().err
