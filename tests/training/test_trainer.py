"""Trainer: resume after a crash gives the same weights, accumulation, checkpoints are safe, init-from."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

import agseg
from agseg.config import TrainConfig
from agseg.training.checkpoint import load_checkpoint, save_checkpoint, transfer_weights
from agseg.training.trainer import Trainer, build_scheduler, quick_dice


class Squares(Dataset):
    """Bright squares on noise; label = the square."""

    def __init__(self, n: int = 8, size: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            lab = torch.zeros(size, size, dtype=torch.long)
            r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
            lab[r : r + 6, c : c + 6] = 1
            img = lab.float()[None] + 0.3 * torch.randn(1, size, size, generator=g)
            self.items.append({"image": img, "label": lab[None], "case_id": f"c{len(self.items)}"})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def bce(out, y):
    outs = out if isinstance(out, list) else [out]
    return sum(F.binary_cross_entropy_with_logits(o[:, 0].float(), y.float()) for o in outs) / len(outs)


def make_trainer(tmp_path, callback=None, **cfg_kw):
    torch.manual_seed(0)
    model = agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8, 16), deep_supervision=True)
    cfg = TrainConfig(epochs=3, batch_size=2, lr=1e-2, amp="off", deterministic=True, channels_last=False, **cfg_kw)
    return Trainer(model, bce, Squares(8), Squares(4, seed=1), cfg, tmp_path, seed=3, step_callback=callback)


def test_resume_after_crash_mid_epoch_gives_identical_weights(tmp_path):
    ref = make_trainer(tmp_path / "ref")
    ref.fit()

    def crash(epoch: int, step: int) -> None:
        if epoch == 1 and step == 1:
            raise KeyboardInterrupt("simulated kill")

    broken = make_trainer(tmp_path / "run", crash)
    with pytest.raises(KeyboardInterrupt):
        broken.fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = make_trainer(tmp_path / "run")
    resumed.fit(resume=True)
    assert len(resumed.history) == 3
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
    # and a run that is not resumed but restarted differs (the test can fail)
    assert (tmp_path / "run" / "log.csv").read_text(encoding="utf-8").count("\n") == 4


def test_training_reduces_loss_and_writes_files(tmp_path):
    tr = make_trainer(tmp_path, select="best")
    res = tr.fit()
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and (tmp_path / "log.csv").is_file()
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")], "temp files left"
    assert 1 <= res.best_epoch <= 3 and res.selected_epoch == res.best_epoch
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["model"]
    for k, v in tr.model.state_dict().items():  # the model holds the selected (best) epoch's weights
        torch.testing.assert_close(v, best[k], rtol=0, atol=0)


def test_without_validation_the_last_epoch_is_selected(tmp_path):
    torch.manual_seed(0)
    model = agseg.create_model("unet", spatial_dims=2, channels=(4, 8))
    cfg = TrainConfig(epochs=2, batch_size=2, amp="off", channels_last=False, select="best")
    res = Trainer(model, bce, Squares(4), None, cfg, tmp_path, seed=3).fit()
    assert res.best_epoch == -1 and res.selected_epoch == 2 and res.checkpoint.name == "last.pt"


def test_gradient_accumulation_steps(tmp_path):
    steps = []
    tr = make_trainer(tmp_path, lambda e, s: steps.append((e, s)), grad_accum=2)
    tr.cfg = TrainConfig(**{**tr.cfg.__dict__, "epochs": 1})
    tr.fit()
    assert len(steps) == 2  # 8 cases, batch 2 -> 4 micro-batches -> 2 optimiser steps


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_checkpoint_loading_is_safe(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(bad)
    good = save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "ok.pt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:50])
    with pytest.raises(ValueError, match="trunc.pt"):
        load_checkpoint(trunc)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unet_weights_into_attention_unet_and_class_subset():
    unet = agseg.create_model("unet", spatial_dims=2, out_channels=4, channels=(4, 8, 16), deep_supervision=True)
    att = agseg.create_model(
        "attention_unet", spatial_dims=2, out_channels=4, channels=(4, 8, 16), deep_supervision=True
    )
    rep = transfer_weights(att, unet.state_dict())
    assert not rep.skipped
    assert all(k.startswith(("gates.", "gating_signal.")) for k in rep.missing)
    torch.testing.assert_close(att.state_dict()["encoder.0.0.0.weight"], unet.state_dict()["encoder.0.0.0.weight"])
    # fine-tune on classes 0 and 2 of the 4 (seed 001 Table 3: other outputs excluded)
    small = agseg.create_model("unet", spatial_dims=2, out_channels=2, channels=(4, 8, 16), deep_supervision=True)
    rep = transfer_weights(small, unet.state_dict(), classes=[0, 2], n_source_classes=4)
    assert not rep.skipped and rep.sliced
    src, dst = unet.state_dict(), small.state_dict()
    torch.testing.assert_close(dst["head.heads.0.weight"], src["head.heads.0.weight"][[0, 2]])
    # the fusion conv takes 2 heads x 4 classes in; classes 0 and 2 of each head are kept
    torch.testing.assert_close(dst["head.fuse.weight"], src["head.fuse.weight"][[0, 2]][:, [0, 2, 4, 6]])


def test_schedules_and_quick_dice():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1))
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[-1] < 0.1
    logits = torch.tensor([[[[5.0, -5.0], [5.0, -5.0]]]])
    label = torch.tensor([[[1, 0], [0, 0]]])
    assert quick_dice(logits, label) == pytest.approx(2 * 1 / (2 + 1))
    with pytest.raises(ValueError, match="optimizer"):
        make_trainer_bad = TrainConfig(optimizer="rmsprop")
        Trainer(torch.nn.Conv2d(1, 1, 1), bce, Squares(2), None, make_trainer_bad, "/tmp/x")


def test_denormal_flushing_does_not_leak_out_of_training(tmp_path):
    """Flush-to-zero stays inside fit(): left on, it made SciPy's cKDTree (distance metrics) crash later."""
    import numpy as np

    tiny = np.array([1e-40], dtype=np.float32)
    tr = make_trainer(tmp_path)
    tr.cfg = TrainConfig(**{**tr.cfg.__dict__, "epochs": 1})
    tr.fit()
    assert (tiny * np.float32(1.0))[0] != 0, "denormals are still flushed after training"


def test_attention_maps_saved_over_epochs(tmp_path):
    tr = make_trainer(tmp_path)
    tr.cfg = TrainConfig(**{**tr.cfg.__dict__, "epochs": 3, "attention_every": 2})
    tr.fit()
    saved = sorted(p.name for p in (tmp_path / "attention").glob("epoch_*.npz"))
    assert saved == ["epoch_002.npz", "epoch_003.npz"]  # every 2 epochs, and the last one
    import numpy as np

    with np.load(tmp_path / "attention" / "epoch_003.npz") as z:
        assert z["level1"].shape == (1, 16, 16)  # resampled to the image grid
        assert z["level1"].min() >= 0 and z["level1"].max() <= 1
    assert (tmp_path / "attention" / "evolution_level1.png").is_file()
