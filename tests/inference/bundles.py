"""A small model bundle on disk for the export tests (the shared set-up of test_export and test_export_program)."""

from __future__ import annotations

import torch

import agseg
from agseg.data.preprocess import PreprocessConfig, Preprocessor
from agseg.inference.bundle import ModelBundle


def bundle_dir(tmp_path, name, kwargs, seed=0, **extra):
    """``(run folder holding model/, the net in eval mode)`` with non-trivial batch-norm statistics, so that eval
    mode differs from train mode."""
    torch.manual_seed(seed)
    net = agseg.create_model(name, **kwargs)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    bundle = ModelBundle(name, kwargs, Preprocessor(PreprocessConfig(intensity="zscore_case")).to_dict(), **extra)
    out = tmp_path / f"{name}_run" / "model"
    out.mkdir(parents=True)
    bundle.save(out, net)
    return out.parent, net.eval()
