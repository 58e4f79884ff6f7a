"""Quantization-aware training: the integer variant, fake int8 on every op, the export's activation ranges, loss falls,
exact resume after SIGKILL, a teacher other than the starting weights."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from test_train import EGEUNET, _env, _tiny_dataset, kill_in_second_epoch

from egeunet_deploy.model import create_model
from egeunet_deploy.model.contract import to_model_input
from egeunet_deploy.model.layers import activation
from egeunet_deploy.model.qat import FakeQuantMode, QATNet, fake_quant_weight, range_images
from egeunet_deploy.model.train import recipe_loss


def test_integer_variant_is_the_same_checkpoint_with_integer_friendly_ops():
    paper, variant = create_model("egeunet"), create_model("egeunet_int")
    assert list(paper.state_dict()) == list(variant.state_dict())  # weights move between them unchanged
    assert paper.cfg.is_paper and not variant.cfg.is_paper
    assert (variant.cfg.act, variant.cfg.align_corners) == ("sigmoid_gelu", False)
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(activation(x, "sigmoid_gelu"), x * torch.sigmoid(1.702 * x))
    assert (activation(x, "sigmoid_gelu") - activation(x, "gelu")).abs().max() < 0.03  # close, not equal
    with pytest.raises(ValueError, match="unknown activation"):
        create_model("egeunet", act="relu")


def test_rewrite_of_the_integer_variant_computes_the_variant(shipped, sample_test_set):
    """The exporters convert FastEGEUNet; for the variant it must follow the variant's GELU and upsampling."""
    from egeunet_deploy.export.rewrite import fast_module
    from egeunet_deploy.export.tflite import integer_variant
    from egeunet_deploy.model.ege_unet import DeployEGEUNet

    net = integer_variant(shipped[0])
    images = sample_test_set.images[:2]
    with torch.no_grad():
        want = DeployEGEUNet(net)(to_model_input(images))[:, 0]
        fast = fast_module(net, "NCHW", baked=True, int8_friendly=True)
        got = fast(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())[:, 0]
        paper = DeployEGEUNet(create_model("egeunet").eval().requires_grad_(False))
    assert (got - want).abs().max() < 1e-4
    paper.net.load_state_dict(shipped[0].state_dict())
    with torch.no_grad():
        assert (paper(to_model_input(images))[:, 0] - want).abs().max() > 1e-3  # really another function


def test_fake_quant_reaches_every_op_and_freezes_in_eval(shipped, sample_test_set):
    net = create_model("egeunet_int")
    net.load_state_dict(shipped[0].state_dict())
    qnet = QATNet(net)
    x = to_model_input(sample_test_set.images[:2])
    qnet.train()
    with torch.no_grad():
        _, logits = qnet.forward_logits(x)
    n_ops = len(qnet.observers)
    # convolutions, norm statistics, rsqrt, GELU's sigmoid and product, resizes, additions, concatenations, the
    # decomposed GroupNorms, the input: hundreds of quantization points, not only the ~80 convolutions
    assert n_ops > 500
    frozen = qnet.observer_state()
    qnet.eval()
    with torch.no_grad():
        _, logits_eval = qnet.forward_logits(to_model_input(sample_test_set.images[2:3]))  # another batch size
    assert len(qnet.observers) == n_ops  # the same ops, addressed the same way at batch size 1
    assert all(torch.equal(frozen[k], qnet.observers[k]) for k in frozen)
    with torch.no_grad():
        _, float_logits = net.forward_logits(x)
    diff = (torch.sigmoid(logits) - torch.sigmoid(float_logits)).abs()
    assert 0 < diff.mean() < 0.05  # quantization noise: present, and not destroying the output


def test_weight_fake_quant_is_per_channel_int8():
    w = torch.randn(4, 3, 3, 3) * torch.tensor([1.0, 10.0, 0.1, 100.0])[:, None, None, None]
    q = fake_quant_weight(w)
    for c in range(4):
        step = w[c].abs().max() / 127
        levels = q[c] / step
        torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)  # on its own channel's grid
        assert (q[c] - w[c]).abs().max() <= step / 2 + 1e-6


def test_disabled_mode_is_the_float_network(shipped, sample_test_set):
    net = create_model("egeunet_int")
    net.load_state_dict(shipped[0].state_dict())
    x = to_model_input(sample_test_set.images[:1])
    with torch.no_grad():
        want = net.forward_logits(x)[1]
        with FakeQuantMode({}, update=True, enabled=False):
            got = net.forward_logits(x)[1]
    assert torch.equal(want, got)


def test_extremes_ranges_are_the_float_networks_per_image_extremes_and_stay_frozen(shipped, sample_test_set):
    """``calibrate`` sets every observer to what the export's ``calibrate_extremes`` computes on the float graph: the
    min of per-image minima and max of maxima, of the float network (no fake quantization upstream)."""
    net = create_model("egeunet_int")
    net.load_state_dict(shipped[0].state_dict())
    x = to_model_input(sample_test_set.images[:3])
    qnet = QATNet(net, ranges="extremes")
    qnet.calibrate(x, batch_size=2)  # batches of 2 and 1
    n_ops = len(qnet.observers)
    assert n_ops > 500
    torch.testing.assert_close(qnet.observers[0], torch.stack([x.min(), x.max()]))  # the input
    per_image = [QATNet(net, ranges="extremes").calibrate(x[i : i + 1]) for i in range(3)]
    assert all(len(p) == n_ops for p in per_image)
    for k, obs in qnet.observers.items():  # (batched and single-image convolutions may round differently)
        want = torch.stack([torch.stack([p[k][0] for p in per_image]).min(),
                            torch.stack([p[k][1] for p in per_image]).max()])
        torch.testing.assert_close(obs, want, rtol=1e-4, atol=1e-5, msg=f"op {k}")
    # float: the last op observed is the output map, whose range is the float network's, not a fake-quantized one
    with torch.no_grad():
        float_out = torch.cat([net.forward_logits(x[i : i + 1])[1] for i in range(3)])
    last = qnet.observers[n_ops - 1]
    torch.testing.assert_close(last, torch.stack([float_out.min(), float_out.max()]), rtol=1e-4, atol=1e-4)
    frozen = qnet.observer_state()
    qnet.train()
    with torch.no_grad():
        qnet.forward_logits(to_model_input(sample_test_set.images[3:5]))  # a training step's forward
    assert len(qnet.observers) == n_ops
    assert all(torch.equal(frozen[k], qnet.observers[k]) for k in frozen)  # frozen within the epoch
    with pytest.raises(ValueError, match="unknown"):
        QATNet(net, ranges="percentile")


def test_range_images_are_the_exports_default_calibration_set(tmp_path):
    """The ``extremes`` ranges are computed on the very images `egeunet export --precision int8-full` calibrates on
    when no --calib is given (the bundled sample's 64 train images), decoded identically."""
    import numpy as np

    from egeunet_deploy.calibration.build import bundled_calibration_set, load_calibration_set

    calib, manifest = load_calibration_set(bundled_calibration_set(tmp_path))
    ours = range_images().numpy()
    assert ours.shape == calib.shape == (64, 256, 256, 3)
    order = lambda a: np.argsort([hash(im.tobytes()) for im in a])  # noqa: E731 - same images, any order
    assert np.array_equal(ours[order(ours)], calib[order(calib)])
    assert manifest["source"]["split"] == "train"


def test_qat_steps_reduce_the_distillation_loss_on_real_images(shipped, sample_test_set):
    teacher = shipped[0]
    net = create_model("egeunet_int")
    net.load_state_dict(teacher.state_dict())
    qnet = QATNet(net).train()
    x = to_model_input(sample_test_set.images[:4])
    with torch.no_grad():
        target = torch.sigmoid(teacher.forward_logits(x)[1])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        ds, logits = qnet.forward_logits(x)
        loss = recipe_loss(ds, logits, target)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.01, losses


def _qat_cmd(data, out, epochs, weights, *extra) -> list[str]:
    return [*EGEUNET, "train", "--qat", "--init-weights", str(weights), "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), "--batch-size", "4", "--lr", "1e-4", "--t-max", str(epochs), "--threads", "1",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def qat_tiny(tmp_path_factory, sample_dir):
    return _tiny_dataset(sample_dir, tmp_path_factory.mktemp("qat_tiny"))


@pytest.mark.slow
def test_qat_run_resumes_exactly_after_sigkill(qat_tiny, tmp_path, shipped):
    weights = shipped[1]["path"]
    straight = tmp_path / "straight"
    subprocess.run(_qat_cmd(qat_tiny, straight, 2, weights), check=True, env=_env(), capture_output=True, text=True)
    a = torch.load(straight / "last.pt", weights_only=True)
    assert a["model_cfg"]["act"] == "sigmoid_gelu" and a["model_cfg"]["align_corners"] is False
    assert a["distilled_from"]["sha256"] == shipped[1]["sha256"]
    assert len(a["qat_observers"]) > 500
    assert a["train_cfg"]["qat_ranges"] == "extremes" and a["select"] == "agreement"  # the defaults
    assert all(0 < r["val_agreement"] <= 1 for r in a["history"])

    out = tmp_path / "killed"
    done = kill_in_second_epoch(_qat_cmd(qat_tiny, out, 2, weights), out)
    assert done and done[-1]["epoch"] < 2, "the kill must land before the run ends"
    resumed = subprocess.run([*EGEUNET, "train", "--resume", str(out), "--threads", "1", "--no-progress"],
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    b = torch.load(out / "last.pt", weights_only=True)
    assert b["epoch"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in a["qat_observers"].items():
        assert torch.equal(value, b["qat_observers"][key]), key
    assert [r["val_dsc"] for r in a["history"]] == [r["val_dsc"] for r in b["history"]]


@pytest.mark.slow
def test_qat_teacher_other_than_the_starting_weights(qat_tiny, tmp_path, shipped):
    """--teacher: start from the shipped QAT weights, distil from the fp32 weights; both recorded, and a resume
    keeps the teacher."""
    from egeunet_deploy.model.bundled import QAT_WEIGHTS
    from egeunet_deploy.model.checkpoint import sha256_file

    out = tmp_path / "run"
    fp32 = Path(shipped[1]["path"])
    r = subprocess.run(_qat_cmd(qat_tiny, out, 1, QAT_WEIGHTS, "--teacher", str(fp32), "--qat-ranges", "ema"),
                       env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "distilling from" in r.stdout
    a = torch.load(out / "last.pt", weights_only=True)
    assert a["started_from"]["sha256"] == sha256_file(QAT_WEIGHTS)
    assert a["distilled_from"]["sha256"] == shipped[1]["sha256"]
    assert a["train_cfg"]["teacher"] == str(fp32.resolve())
    assert a["train_cfg"]["qat_ranges"] == "ema" and a["select"] == "dsc"
    resumed = subprocess.run([*EGEUNET, "train", "--resume", str(out), "--epochs", "2", "--threads", "1",
                              "--no-progress"], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    b = torch.load(out / "last.pt", weights_only=True)
    assert b["epoch"] == 2 and b["distilled_from"] == a["distilled_from"]
    assert b["train_cfg"]["teacher"] == a["train_cfg"]["teacher"] and b["train_cfg"]["qat_ranges"] == "ema"


def test_logit_distance_ignores_saturated_logits_and_is_for_qat_only():
    from egeunet_deploy.model.train import TrainConfig, logit_distance

    student, teacher = torch.tensor([20.0, 0.5, -3.0]), torch.tensor([9.0, -0.5, -3.0])
    torch.testing.assert_close(logit_distance(student, teacher), torch.tensor(1 / 3))  # 20 and 9: both past +8
    with pytest.raises(ValueError, match="--distill-logits"):
        TrainConfig(data="x", distill_logits=0.1).check()
    with pytest.raises(ValueError, match="--qat-ranges"):
        TrainConfig(data="x", qat=True, init_weights="w", qat_ranges="mean").check()
    TrainConfig(data="x", qat=True, init_weights="w", distill_logits=0.1).check()


def test_teacher_without_qat_is_refused(tmp_path, qat_tiny, shipped):
    r = subprocess.run([*EGEUNET, "train", "--teacher", str(shipped[1]["path"]), "--data", str(qat_tiny), "--out",
                        str(tmp_path / "x")], env=_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "--teacher" in r.stderr
    assert not (tmp_path / "x").exists()


def test_qat_without_init_weights_is_refused(tmp_path, qat_tiny):
    r = subprocess.run([*EGEUNET, "train", "--qat", "--data", str(qat_tiny), "--out", str(tmp_path / "x")],
                       env=_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "--qat" in r.stderr and "--init-weights" in r.stderr
    assert not (tmp_path / "x").exists()


def test_shipped_qat_weights_load_as_the_integer_variant_in_info_and_evaluate(sample_dir):
    from egeunet_deploy.model.bundled import QAT_WEIGHTS
    from egeunet_deploy.model.checkpoint import load_model

    net, ckpt = load_model(QAT_WEIGHTS)
    assert (net.cfg.act, net.cfg.align_corners) == ("sigmoid_gelu", False)
    assert ckpt["distilled_from"]["sha256"] == load_model()[1]["sha256"]  # trained to match the shipped fp32 weights
    info = subprocess.run([*EGEUNET, "info", "--weights", str(QAT_WEIGHTS)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "egeunet_int" in info.stdout and "int8-full artifact" in info.stdout
    ev = subprocess.run([*EGEUNET, "evaluate", "--weights", str(QAT_WEIGHTS), "--data", str(sample_dir), "--split",
                         "test"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    assert float(ev.stdout.split("DSC ")[1].split()[0]) > 0.75  # a working segmenter on the bundled test pairs
