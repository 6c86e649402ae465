"""``torch.utils.data.Dataset`` over cases: load -> preprocess (cached on disk) -> augment -> tensors.

Each item is a dict::

    {"image": torch.float32 (C, *spatial), "label": torch.int64 (*spatial) [or (1, *spatial)], "case_id": str}

``spatial`` is ``(H, W)`` or ``(D, H, W)`` (array order), ``patch_size`` when augmentation crops. The default
collate stacks them into ``image (B, C, *spatial)``, ``label (B, *spatial)`` and a list of ``case_id``.

Randomness: with ``seed=None`` (default) each sample's augmentation seed is drawn from torch's RNG, which PyTorch
seeds per epoch and per worker, so ``torch.manual_seed`` makes a run reproducible for a given ``num_workers``. With
``seed=int`` the sample seed is derived from ``(seed, epoch, index)`` -- identical for any number of workers -- and
the trainer calls :meth:`SegmentationDataset.set_epoch` before each epoch (as with ``DistributedSampler``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from agseg.data.augment import AugmentConfig, Augmenter
from agseg.data.cache import PreprocessCache
from agseg.data.cases import CaseRef
from agseg.data.errors import DataError, SkippedCase
from agseg.data.label_set import LabelSet
from agseg.data.preprocess import Preprocessor, PreprocessRecord

log = logging.getLogger(__name__)


class SegmentationDataset(Dataset):
    """Cases -> preprocessed (and cached), optionally augmented, tensors.

    Args:
        cases: The cases (e.g. a :class:`~agseg.data.cases.DatasetIndex` or one fold's list).
        preprocessor: Preprocessing (default: per-case z-score only). Fitted here on ``cases`` when it needs global
            statistics and has none (pass the fitted one to validation/test datasets).
        cache: A :class:`~agseg.data.cache.PreprocessCache` or its folder; ``None`` preprocesses on every access.
        augment: An :class:`~agseg.data.augment.Augmenter` or :class:`~agseg.data.augment.AugmentConfig`; ``None``
            for no augmentation (validation).
        seed: Per-sample augmentation seeds from ``(seed, epoch, index)`` (see module docs); ``None``: torch's RNG.
        label_channel: Yield ``label`` as ``(1, *spatial)`` instead of ``(*spatial)``.
        require_label: Raise for a case without a mask (training). With ``False`` unlabelled items have no
            ``"label"`` key.
        label_set: The experiment's :class:`~agseg.data.label_set.LabelSet`: labels are yielded as its class
            indices (0..K-1), and a value outside it raises a ``DataError`` naming the case. ``None``: raw values.
    """

    def __init__(
        self,
        cases: Sequence[CaseRef],
        preprocessor: Preprocessor | None = None,
        *,
        cache: PreprocessCache | str | Path | None = None,
        augment: Augmenter | AugmentConfig | None = None,
        seed: int | None = None,
        label_channel: bool = False,
        require_label: bool = True,
        label_set: LabelSet | None = None,
    ) -> None:
        self.cases = list(cases)
        if not self.cases:
            raise ValueError("SegmentationDataset needs at least one case")
        self.preprocessor = preprocessor or Preprocessor()
        self.cache = PreprocessCache(cache) if isinstance(cache, str | Path) else cache
        self.augment = augment
        self.seed = seed
        self.label_channel = label_channel
        self.require_label = require_label
        self.label_set = label_set
        self.epoch = 0
        self._augmenter: Augmenter | None = augment if isinstance(augment, Augmenter) else None
        if self.preprocessor.needs_fit:
            log.info("fitting global intensity statistics on %d case(s)", len(self.cases))
            self.preprocessor.fit(self.cases, cache=self.cache)

    def __len__(self) -> int:
        return len(self.cases)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used to derive per-sample seeds when ``seed`` is an int."""
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, PreprocessRecord]:
        """Preprocessed ``(image (C, *spatial) float32, label (*spatial) | None, record)`` of case ``index``."""
        ref = self.cases[index]
        if self.cache is not None:
            return self.cache.get_or_create(ref, self.preprocessor)
        out = self.preprocessor.apply_case(ref.load())
        return out.image, out.label, out.record

    def record(self, index: int) -> PreprocessRecord:
        """How case ``index`` was preprocessed (for :func:`~agseg.data.preprocess.invert`)."""
        return self.load(index)[2]

    def _sample_seed(self, index: int, draw: int = 0) -> int:
        if self.seed is None:
            return int(torch.randint(0, 2**31 - 1, ()).item())
        key = [self.seed, self.epoch, index] + ([draw] if draw else [])  # a first draw: the seed it always had
        return int(np.random.SeedSequence(key).generate_state(1)[0])

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        case, draw = index if isinstance(index, tuple) else (index, 0)  # (case, k): its k-th draw in an epoch
        ref = self.cases[case]
        if self.require_label and not ref.has_mask:
            raise DataError(ref.image_paths[0], "case has no mask (a training dataset needs labels)", ref.case_id)
        image, label, _ = self.load(case)
        if label is not None and self.label_set is not None:
            try:
                label = self.label_set.encode(label)
            except ValueError as err:
                where = ref.mask_paths[0] if ref.mask_paths else ref.image_paths[0]
                raise DataError(where, str(err), ref.case_id) from None
        if self.augment is not None:
            if self._augmenter is None:
                assert isinstance(self.augment, AugmentConfig)
                self._augmenter = Augmenter(self.augment, spatial_dims=image.ndim - 1, seed=None)
            img_t, lab_t = self._augmenter(image, label, seed=self._sample_seed(case, draw))
        else:
            img_t = torch.from_numpy(np.array(image, dtype=np.float32))
            lab_t = torch.from_numpy(np.asarray(label).astype(np.int64)) if label is not None else None
        item: dict[str, Any] = {"image": img_t, "case_id": ref.case_id}
        if lab_t is not None:
            item["label"] = lab_t[None] if self.label_channel else lab_t
        return item

    def warm_cache(self, *, num_workers: int = 0, skip_bad: bool = False, progress: bool = False) -> list[SkippedCase]:
        """Preprocess every case into the cache now (in ``num_workers`` processes), so training reads only the cache.

        Args:
            num_workers: Worker processes (0: in this process).
            skip_bad: Drop bad cases from this dataset (logged and returned) instead of raising.
            progress: Show a progress bar.

        Returns:
            The skipped cases.

        Raises:
            DataError: The first bad case, when not ``skip_bad``.
            ValueError: No cache configured.
        """
        if self.cache is None:
            raise ValueError("warm_cache() needs a cache")
        loader = DataLoader(_Warm(self), batch_size=None, num_workers=num_workers, shuffle=False)
        it: Any = loader
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(loader, total=len(self.cases), desc="caching", unit="case", leave=False, disable=None)
        bad: list[SkippedCase] = []
        for index, err in it:
            if err is not None:
                e = DataError(err[0], err[1], self.cases[index].case_id)
                if not skip_bad:
                    raise e
                bad.append(SkippedCase.from_error(e))
        if bad:
            log.warning("skipped %d bad case(s):\n  %s", len(bad), "\n  ".join(str(b) for b in bad))
            ids = {b.case_id for b in bad}
            self.cases = [c for c in self.cases if c.case_id not in ids]
        return bad


class _Warm(Dataset):
    def __init__(self, ds: SegmentationDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds.cases)

    def __getitem__(self, i: int) -> tuple[int, tuple[str, str] | None]:
        assert self.ds.cache is not None
        try:
            self.ds.cache.get_or_create(self.ds.cases[i], self.ds.preprocessor)
        except DataError as e:
            return i, (e.path, e.problem)
        return i, None


def case_target(ref: CaseRef) -> int | None:
    """The image-level class of a case (``CaseRef.target``), or None."""
    return None if ref.target is None else int(ref.target)


class ClassificationDataset(SegmentationDataset):
    """Cases with an image-level class -> preprocessed (cached), optionally augmented images and class indices.

    Items: ``{"image": float32 (C, *spatial), "label": int64 () class index, "case_id": str}``. The class of a case is
    its ``target`` (a label value of ``label_set``; ``CaseRef.target``); masks, when a case has them, are ignored.
    """

    def __init__(self, cases: Sequence[CaseRef], preprocessor: Preprocessor | None = None, **kw: Any) -> None:
        label_set = kw.get("label_set")
        super().__init__(cases, preprocessor, **{**kw, "require_label": False})
        self.targets: list[int] = []
        for ref in self.cases:
            t = case_target(ref)
            if t is None:
                raise DataError(
                    ref.image_paths[0], "case has no class (a classification dataset needs one)", ref.case_id
                )
            if label_set is not None:
                label_set.check([t], ref.image_paths[0], ref.case_id)
                t = int(label_set.encode(np.asarray([t]))[0])
            self.targets.append(t)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        case, draw = index if isinstance(index, tuple) else (index, 0)  # as SegmentationDataset: a repeated draw
        ref = self.cases[case]
        image, _, _ = self.load(case)
        if self.augment is not None:
            if self._augmenter is None:
                assert isinstance(self.augment, AugmentConfig)
                self._augmenter = Augmenter(self.augment, spatial_dims=image.ndim - 1, seed=None)
            img_t, _ = self._augmenter(image, None, seed=self._sample_seed(case, draw))
        else:
            img_t = torch.from_numpy(np.array(image, dtype=np.float32))
        return {"image": img_t, "label": torch.tensor(self.targets[case], dtype=torch.int64), "case_id": ref.case_id}
