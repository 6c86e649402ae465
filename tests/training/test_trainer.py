"""Trainer: resume after a crash gives the same weights, callbacks, loader injection, accumulation, checkpoints are
safe, init-from."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

import agseg
from agseg.config import TrainConfig
from agseg.training.callbacks import Callback, EarlyStopping, default_callbacks
from agseg.training.checkpoint import load_checkpoint, save_checkpoint, transfer_weights
from agseg.training.trainer import Trainer, build_scheduler, default_loader, quick_dice


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


class OnStep(Callback):
    """Calls ``fn(epoch, step)`` after every optimiser step (epochs count from 1)."""

    main_process_only = False

    def __init__(self, fn) -> None:
        self.fn = fn

    def on_step_end(self, trainer, epoch: int, step: int) -> None:
        self.fn(epoch, step)


def make_trainer(tmp_path, callback=None, model=None, **cfg_kw):
    torch.manual_seed(0)
    if model is None:
        model = agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8, 16), deep_supervision=True)
    kw = {"epochs": 3, "batch_size": 2, "lr": 1e-2, "amp": "off", "deterministic": True, "channels_last": False}
    cfg = TrainConfig(**{**kw, **cfg_kw})
    callbacks = default_callbacks(tmp_path, cfg, progress=False) + ([OnStep(callback)] if callback else [])
    return Trainer(model, bce, Squares(8), Squares(4, seed=1), cfg, tmp_path, seed=3, callbacks=callbacks)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_crash_mid_epoch_gives_identical_weights(tmp_path):
    ref = make_trainer(tmp_path / "ref")
    ref.fit()

    def crash(epoch: int, step: int) -> None:
        if epoch == 2 and step == 2:
            raise KeyboardInterrupt("simulated kill")

    broken = make_trainer(tmp_path / "run", crash)
    with pytest.raises(KeyboardInterrupt):
        broken.fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = make_trainer(tmp_path / "run")
    resumed.fit(resume=True)
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
    # the history is continued, not restarted: epochs 1, 2, 3 once each, epoch 1 as the uninterrupted run saw it
    assert [int(r["epoch"]) for r in resumed.history] == [1, 2, 3]
    assert resumed.history[0]["train_loss"] == ref.history[0]["train_loss"]
    assert resumed.history[-1]["train_loss"] == ref.history[-1]["train_loss"]
    log_epochs = [
        line.split(",")[0] for line in (tmp_path / "run" / "log.csv").read_text(encoding="utf-8").splitlines()[1:]
    ]
    assert log_epochs == ["1", "2", "3"]
    # the test can fail: restoring the weights alone (without optimiser, schedule and RNG state) does not reproduce
    # the uninterrupted run
    partial = make_trainer(tmp_path / "partial")
    partial.model.load_state_dict(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"])
    partial.start_epoch = 1
    partial.fit()
    assert not _same_weights(ref.model.state_dict(), partial.model.state_dict())


def test_callbacks_write_only_on_the_main_process(tmp_path, monkeypatch):
    import agseg.training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "is_main_process", lambda: False)
    steps = []
    tr = make_trainer(tmp_path / "rank1", lambda e, s: steps.append((e, s)), epochs=2)
    tr.fit()
    assert not (tmp_path / "rank1").exists(), "a non-main process wrote files"
    assert len(steps) == 2 * 4  # callbacks that do not write (main_process_only=False) still run


def test_injected_loader_and_wrapped_models_unwrapped_in_checkpoints(tmp_path):
    calls = []
    base = default_loader()

    def loader(data, **kw):
        calls.append(kw["shuffle"])
        return base(data, **kw)

    torch.manual_seed(0)
    net = agseg.create_model("unet", spatial_dims=2, channels=(4, 8))
    wrapped = torch.nn.DataParallel(net)  # state_dict keys of the wrapper carry "module."
    cfg = TrainConfig(epochs=2, batch_size=2, amp="off", channels_last=False)
    tr = Trainer(wrapped, bce, Squares(4), Squares(2, seed=1), cfg, tmp_path, loader=loader, callbacks=None)
    tr.fit()
    assert calls == [True, False, True, False]  # train + validation pass per epoch, through the injected factory
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    assert set(saved) == set(net.state_dict()) and not any(k.startswith("module.") for k in saved)


def test_trainer_leaves_process_settings_alone(tmp_path):
    before = torch.get_num_threads()
    make_trainer(tmp_path, threads=max(1, before - 1) if before > 1 else 2)
    assert torch.get_num_threads() == before


def test_early_stopping_stops_and_its_state_survives_resume(tmp_path):
    tr = make_trainer(tmp_path, epochs=6, early_stop_patience=1, early_stop_min_delta=1e6)
    res = tr.fit()
    # epoch 1 improves on inf; epoch 2 cannot improve by 1e6: stop after 2 of 6 epochs
    assert res.epochs_run == 2 and res.stopped_early
    stopper = next(c for c in tr.callbacks if isinstance(c, EarlyStopping))
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["callbacks"]["early_stopping"]
    assert saved == stopper.state_dict() and saved["bad_epochs"] == 1
    # resuming a run that stopped early trains nothing more, and restores the stopper's counters
    again = make_trainer(tmp_path, epochs=6, early_stop_patience=1, early_stop_min_delta=1e6)
    res2 = again.fit(resume=True)
    assert res2.epochs_run == 2 and res2.best_epoch == res.best_epoch
    assert next(c for c in again.callbacks if isinstance(c, EarlyStopping)).state_dict() == saved


def test_progress_is_printed_not_only_logged(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=2, amp="off", channels_last=False)
    Trainer(agseg.create_model("unet", spatial_dims=2, channels=(4, 8)), bce, Squares(4), None, cfg).fit()
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "train_loss" in out


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
    assert _same_weights(model.state_dict(), load_checkpoint(res.checkpoint)["model"])


def test_gradient_accumulation_steps(tmp_path):
    steps = []
    make_trainer(tmp_path, lambda e, s: steps.append((e, s)), grad_accum=2, epochs=1).fit()
    assert steps == [(1, 1), (1, 2)]  # 8 cases, batch 2 -> 4 micro-batches -> 2 optimiser steps


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
    assert rep.missing and all(k.startswith("skips.") for k in rep.missing)  # only the gates start fresh
    w = "encoder.blocks.0.0.0.weight"
    torch.testing.assert_close(att.state_dict()[w], unet.state_dict()[w])
    # weights saved with the names of the pre-parts layout (encoder.N, ups.N, decoder.N) transfer as well
    renames = (("encoder.blocks.", "encoder."), ("decoder.ups.", "ups."), ("decoder.blocks.", "decoder."))
    old = {}
    for k, v in unet.state_dict().items():
        for new, legacy in renames:
            k = k.replace(new, legacy)
        old[k] = v
    att2 = agseg.create_model(
        "attention_unet", spatial_dims=2, out_channels=4, channels=(4, 8, 16), deep_supervision=True
    )
    rep2 = transfer_weights(att2, old)
    assert sorted(rep2.loaded) == sorted(rep.loaded)
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


def test_constant_warm_start_is_seed_003s():
    # seed 003: "warm start" with lr 0.01 for 5 epochs, then 0.1 with x0.1 step decay (a linear ramp before)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = TrainConfig(epochs=40, lr=0.1, schedule="step", step_size=20, gamma=0.1, warmup_epochs=5,
                      warmup_mode="constant", warmup_factor=0.1)  # fmt: skip
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.01] * 5) and lrs[5] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="warmup_mode"):
        TrainConfig(warmup_mode="cosine")


def test_denormal_flushing_does_not_leak_out_of_training(tmp_path):
    """Flush-to-zero stays inside fit(): left on, it made SciPy's cKDTree (distance metrics) crash later."""
    import numpy as np

    tiny = np.array([1e-40], dtype=np.float32)
    make_trainer(tmp_path, epochs=1).fit()
    assert (tiny * np.float32(1.0))[0] != 0, "denormals are still flushed after training"


def test_attention_maps_saved_over_epochs(tmp_path):
    from agseg.viz.attention import plot_saved_attention

    make_trainer(tmp_path, epochs=3, attention_every=2).fit()
    plot_saved_attention(tmp_path / "attention")
    saved = sorted(p.name for p in (tmp_path / "attention").glob("epoch_*.npz"))
    assert saved == ["epoch_002.npz", "epoch_003.npz"]  # every 2 epochs, and the last one
    import numpy as np

    with np.load(tmp_path / "attention" / "epoch_003.npz") as z:
        assert z["level1"].shape == (1, 16, 16)  # resampled to the image grid
        assert z["level1"].min() >= 0 and z["level1"].max() <= 1
    assert (tmp_path / "attention" / "evolution_level1.png").is_file()


def test_a_time_budget_stops_mid_epoch(tmp_path):
    from agseg.training.callbacks import TimeBudget

    steps = []
    tr = make_trainer(tmp_path, lambda e, s: steps.append((e, s)), epochs=5)
    tr.callbacks.append(TimeBudget(0.0))  # spent at once: training ends after the first optimiser step
    res = tr.fit()
    assert steps == [(1, 1)] and res.epochs_run == 1 and res.stopped_early


def test_decay_factor_by_hand():
    from agseg.training.trainer import decay_factor

    assert decay_factor("cosine", 0.0) == 1.0 and decay_factor("cosine", 0.5) == pytest.approx(0.5)
    assert decay_factor("cosine", 1.0) == pytest.approx(0.0) and decay_factor("cosine", 2.0) == pytest.approx(0.0)
    assert decay_factor("poly", 0.5) == pytest.approx(0.5**0.9) and decay_factor("poly", 1.5) == 0.0
    assert decay_factor("constant", 0.7) == 1.0


def _fake_fit(monkeypatch, start: float):
    """A settable clock (``clock[0]``), and a stand-in trainer with an SGD optimiser at 0.1 and a constant epoch
    schedule: what TimeBudget reads."""
    import time
    from types import SimpleNamespace

    clock = [start]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    return clock, opt, sched, SimpleNamespace(optimizer=opt, scheduler=sched, stop_training=False)


def test_a_time_budget_anneals_the_rate_by_the_share_of_time_spent(monkeypatch):
    """TimeBudget(anneal="poly"): the rate is the epoch schedule's times (1 - spent / budget) ** 0.9, set at every
    epoch start (after the epoch scheduler reset it) and after every step; at the budget, training stops."""
    from agseg.training.callbacks import TimeBudget

    clock, opt, sched, tr = _fake_fit(monkeypatch, 100.0)
    cb = TimeBudget(10.0, anneal="poly")
    cb.on_fit_start(tr)
    clock[0] = 102.5
    cb.on_step_end(tr, 1, 1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.75**0.9) and not tr.stop_training
    opt.step()
    sched.step()  # the epoch scheduler puts the base rate back ...
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    clock[0] = 105.0
    cb.on_epoch_start(tr, 2)  # ... and the budget's decay applies again before the next epoch's first step
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**0.9)
    cb.on_epoch_end(tr, 2, {})
    assert not tr.stop_training
    clock[0] = 110.0
    cb.on_step_end(tr, 2, 1)
    assert tr.stop_training
    with pytest.raises(ValueError, match="anneal"):
        TimeBudget(1.0, anneal="linear")


def test_a_time_budget_spent_in_validation_starts_no_new_epoch_and_resumes_where_it_was(monkeypatch):
    from agseg.training.callbacks import TimeBudget

    clock, opt, _, tr = _fake_fit(monkeypatch, 0.0)
    cb = TimeBudget(10.0)
    cb.on_fit_start(tr)
    clock[0] = 10.5  # the last step ended before the budget; validation ran past it
    cb.on_epoch_end(tr, 1, {})
    assert tr.stop_training
    # a checkpoint keeps the time spent; the resumed run continues the budget and its decay from there
    clock[0] = 6.0
    saved = cb.state_dict()
    assert saved == {"spent": 6.0}
    tr.stop_training = False  # the resumed run starts afresh, with the same optimiser and schedule
    tr2 = tr
    resumed = TimeBudget(10.0, anneal="poly")
    resumed.load_state_dict(saved)
    clock[0] = 500.0
    resumed.on_fit_start(tr2)
    clock[0] = 501.5
    resumed.on_step_end(tr2, 3, 1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 7.5 / 10) ** 0.9) and not tr2.stop_training
    clock[0] = 504.0
    resumed.on_step_end(tr2, 3, 2)
    assert tr2.stop_training


def test_an_annealed_time_budget_lowers_the_rate_during_a_real_fit(tmp_path):
    # poly: its slope at the start is -0.9, so a few milliseconds already lower the rate (cosine's is 0)
    from agseg.training.callbacks import TimeBudget

    lrs = []
    tr = make_trainer(tmp_path, epochs=2, schedule="constant")
    record = OnStep(lambda e, s: lrs.append(tr.optimizer.param_groups[0]["lr"]))
    tr.callbacks += [TimeBudget(3600.0, anneal="poly"), record]
    res = tr.fit()
    assert len(lrs) >= 4 and all(0 < lr < 1e-2 for lr in lrs)  # decayed from the base 1e-2 ...
    assert lrs == sorted(lrs, reverse=True)  # ... and only downwards, across the epoch boundary too
    # the log records the rate each epoch ran at, not the epoch scheduler's (which stays at 1e-2)
    assert res.history[1]["lr"] < res.history[0]["lr"] <= 1e-2 and res.history[1]["lr"] > lrs[-1]


def test_fp16_autocast_scales_the_loss_and_resumes_with_the_scaler(tmp_path):
    """amp="fp16" (CUDA without bf16; it runs on the CPU too): a GradScaler scales the loss, its state is in last.pt,
    and a resumed run continues with it. bf16 / fp32 runs have no scaler state."""
    tr = make_trainer(tmp_path / "a", amp="fp16", epochs=2, select="last")
    assert tr.dtype == torch.float16 and tr.scaler.is_enabled()
    scaled = []
    orig = tr.scaler.scale
    tr.scaler.scale = lambda loss: scaled.append(float(orig(loss).detach() / loss.detach())) or orig(loss)
    res = tr.fit()
    assert scaled and all(s > 1 for s in scaled)  # the loss was multiplied by the scale before backward
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert state["scaler"]["scale"] > 0
    more = make_trainer(tmp_path / "a", amp="fp16", epochs=3, select="last")
    more.scaler = torch.amp.GradScaler("cpu", init_scale=8.0)  # at another scale: resume restores the saved one
    assert more.resume() and more.start_epoch == 2
    assert more.scaler.get_scale() == state["scaler"]["scale"]
    off = make_trainer(tmp_path / "b", amp="off", epochs=1)
    off.fit()
    assert not off.scaler.is_enabled() and "scaler" not in load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
