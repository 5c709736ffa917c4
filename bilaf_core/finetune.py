"""Full finetuning of a timm backbone on the selected images (ALGORITHM.md, "Finetuning
protocol"): a new linear head, SGD with momentum 0.9 and weight decay 1e-4, lr 3e-3
with linear warm-up then a cosine decay to 1e-5 (per step), label smoothing 0.1,
RandomResizedCrop (bicubic) + horizontal flip for training; resize to 256/224 of the
image size and a centre crop for testing.

A checkpoint is written (atomically) after every epoch under a folder keyed by the
backbone, the selection and every setting; a run with the same inputs resumes from it.
Epoch e shuffles and augments with seed ``random_state * 100_003 + e``, so a resumed
run gives the same numbers as an uninterrupted one, and the same seed and data give
the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import _validation as v
from ._io import atomic_open
from .data import Pool
from .errors import Cancelled
from .evaluate import check_indices, check_selection_labels
from .features import BUNDLED_BACKBONE, Backbone, load_backbone, pooled_features

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "default_checkpoint_dir"]

Progress = Callable[[float, str], None]

#: An evaluated image's cost against a trained one's, to weigh evaluation in the progress
#: fraction: a forward pass without the backward pass (about twice the forward's cost).
EVAL_COST = 1 / 3


@dataclass(frozen=True)
class FinetuneConfig:
    """Every setting of a finetuning run (part of the checkpoint key).

    ``warmup_epochs`` is capped at ``epochs - 1`` so short runs still decay.
    ``eval_every``: evaluate after every that many epochs, and always after the last.
    ``eval_limit``: evaluate on at most that many (seeded) samples of the evaluation split;
    more than the split holds (or None): all of it.
    """

    epochs: int = 10
    image_size: int = 224
    batch_size: int = 32
    lr: float = 3e-3
    min_lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    label_smoothing: float = 0.1
    eval_every: int = 1
    eval_limit: int | None = 2000
    num_workers: int = 0
    random_state: int = 0

    #: The whole-number settings and their lowest allowed value (none has a highest).
    LOWEST = {"epochs": 1, "image_size": 32, "batch_size": 1, "warmup_epochs": 0, "eval_every": 1, "eval_limit": 1,
              "num_workers": 0}

    def problems(self) -> dict[str, str]:
        """Each setting the library refuses -> why, in words that follow its name ("must be
        an integer >= 1, got 0"): the allowed range and the value given. Empty when every
        setting is usable. A page names its own label before each (Finetune's inputs)."""
        found = {}
        for name, lowest in self.LOWEST.items():
            value = getattr(self, name)
            if name == "eval_limit" and value is None:  # None: the whole evaluation split
                continue
            if not v.is_int(value) or int(value) < lowest:
                found[name] = f"must be an integer >= {lowest}, got {value!r}"
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            found["lr"] = f"needs lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}"
        if not 0 <= self.label_smoothing < 1:
            found["label_smoothing"] = f"must be in [0, 1), got {self.label_smoothing}"
        try:
            v.check_random_state(self.random_state)
        except ValueError as exc:
            found["random_state"] = str(exc).removeprefix("random_state ")
        return found

    @property
    def warmup_used(self) -> int:
        """The warm-up epochs a run spends: ``warmup_epochs`` capped at ``epochs - 1`` (so
        that a short run still decays)."""
        return min(self.warmup_epochs, self.epochs - 1)

    def validate(self) -> "FinetuneConfig":
        """Self, or a ValueError naming the first setting :meth:`problems` finds."""
        for name, why in self.problems().items():
            raise ValueError(f"{name} {why}")
        return self


@dataclass(frozen=True)
class FinetuneResult:
    """``history``: one dict per epoch (epoch, loss, lr, top1 or None, seconds).
    ``top1``: the number reported, ``best_top1`` (the papers' protocol) -- ``reported``
    says which; ``final_top1`` is the last evaluation's. ``backbone``: the timm model
    trained, which is the bundled one, not the one asked for, after an offline fallback
    (``allow_fallback``); ``weights``: where its weights came from, in words."""

    history: list
    final_top1: float
    best_top1: float
    best_epoch: int
    eval_split: str
    n_train: int
    n_eval: int
    n_classes: int
    checkpoint: str
    resumed_from_epoch: int
    seconds: float
    device: str
    reported: str = "best"
    config: dict = field(default_factory=dict)
    backbone: str = ""
    weights: str = ""

    @property
    def top1(self) -> float:
        return self.best_top1 if self.reported == "best" else self.final_top1

    def to_dict(self) -> dict:
        return {**asdict(self), "top1": self.top1}


def default_checkpoint_dir() -> Path:
    base = os.environ.get("BILAF_DATA_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "bilaf-studio") / "checkpoints"


def _build_classifier(backbone: Backbone, n_classes: int, seed: int):
    """The backbone with a new, seeded linear head (a class made here: torch loads lazily)."""
    import torch
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = backbone.model
            width = backbone.model.num_features * (2 if backbone.pooling == "cls+mean" else 1)
            torch.manual_seed(seed)
            self.head = nn.Linear(width, n_classes)

        def forward(self, batch):
            return self.head(pooled_features(self.body, backbone.pooling, batch))

    return Classifier()


class _Split:
    """A torch dataset over pool images with a transform; unreadable images raise."""

    def __init__(self, pool: Pool, indices: np.ndarray, labels: np.ndarray, transform):
        self.pool, self.indices, self.labels, self.transform = pool, indices, labels, transform

    def __len__(self) -> int:
        return self.indices.size

    def __getitem__(self, item: int):
        i = int(self.indices[item])
        try:
            image = self.pool.load_image(i)
        except Exception as exc:
            raise ValueError(f"image {self.pool.ids[i]!r} cannot be read ({exc}); remove it from the selection") from None
        return self.transform(image), int(self.labels[item])


def _transforms(backbone: Backbone, size: int):
    from torchvision import transforms as T

    normalize = T.Normalize(backbone.mean, backbone.std)
    bicubic = T.InterpolationMode.BICUBIC
    train = T.Compose([T.RandomResizedCrop(size, interpolation=bicubic), T.RandomHorizontalFlip(), T.ToTensor(),
                       normalize])
    test = T.Compose([T.Resize(int(round(size * 256 / 224)), interpolation=bicubic), T.CenterCrop(size),
                      T.ToTensor(), normalize])
    return train, test


def _lr_at(step: int, total: int, warmup: int, config: FinetuneConfig) -> float:
    """Linear warm-up from lr/warmup to lr, then cosine to min_lr (per optimiser step)."""
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def _eval_split(pool: Pool, selected: np.ndarray, limit: int | None, seed: int) -> tuple[Pool, np.ndarray, str]:
    """The test split, or else the unselected pool samples; at most ``limit``, seeded."""
    if pool.test is not None and pool.test.labels is not None:
        source, candidates, name = pool.test, np.arange(len(pool.test)), "test"
    else:
        source, candidates, name = pool, np.setdiff1d(np.arange(len(pool)), selected), "unselected pool"
    if source.labels is None:
        raise ValueError(f"{pool.name} has no labelled test split to measure accuracy on; give a test folder with "
                         "class subfolders")
    if candidates.size == 0:
        raise ValueError("nothing is left to evaluate on: the selection covers the pool and there is no test split")
    if limit is not None and candidates.size > limit:
        candidates = np.sort(np.random.default_rng(seed).choice(candidates, limit, replace=False))
    return source, candidates, name


def finetune(
    pool: Pool,
    indices: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    backbone: str = BUNDLED_BACKBONE,
    weights: str | os.PathLike | None = None,
    config: FinetuneConfig = FinetuneConfig(),
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    device: str | None = None,
    allow_fallback: bool = False,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_start: Callable[[dict], None] | None = None,
) -> FinetuneResult:
    """Finetune ``backbone`` on the selected images of ``pool`` and report top-1.

    Parameters
    ----------
    pool : the image pool; its ``test`` split is the evaluation split when present,
        else the unselected pool samples (at most ``config.eval_limit`` of them).
    indices : (B,) distinct pool indices of the selection.
    labels : (B,) class ids of the selected samples (e.g. from an id,label CSV for an
        unlabelled folder); default: the pool's labels (the oracle).
    backbone, weights, allow_fallback : as :func:`bilaf_core.features.load_backbone`.
    config : the protocol's settings.
    checkpoint_dir : where per-run checkpoint folders go (default
        ``~/.cache/bilaf-studio/checkpoints``); ``resume`` continues a matching run.
    device : ``cuda`` when available, else ``cpu`` (default).
    progress : callable(fraction, message), called per batch of training and of each
        evaluation ("epoch 3: evaluating 640 of 1,708"); the fraction counts the images
        trained on and evaluated so far, an evaluated one as :data:`EVAL_COST` of a
        trained one, so it moves during an evaluation and tells the time left.
    should_stop : polled per batch; when it returns True, :class:`bilaf_core.errors.Cancelled` is
        raised ("Cancelled during epoch 3 of 10", its ``epochs_kept`` the finished epochs)
        and the last finished epoch's checkpoint stays for a resume.
    on_epoch : called with each epoch's history entry (e.g. to store it).
    on_start : called once the backbone is loaded, before training, with ``{"backbone":
        the timm model trained, "weights": where its weights came from}`` (after a
        fallback, the bundled model: e.g. to record it for a run that never finishes).

    Returns
    -------
    FinetuneResult
    """
    import torch
    from torch import nn

    config = config.validate()
    indices = check_indices(indices, len(pool))
    if labels is None:
        if pool.labels is None:
            raise ValueError(f"{pool.name} has no labels; finetuning needs one per selected sample: give an id,label "
                             "CSV for the selected samples")
        labels = pool.labels[indices]
    labels = np.asarray(labels)
    if labels.shape != indices.shape or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise ValueError(f"labels must be {indices.size} non-negative integer class ids, one per selected sample")
    check_selection_labels(labels, protocol="finetuned")
    if backbone == "pixels":
        raise ValueError("the pixels backbone has no weights to finetune; choose a timm backbone")
    n_classes = max(len(pool.class_names), int(labels.max()) + 1)
    report = progress or (lambda fraction, message: None)
    stop = should_stop or (lambda: False)

    model_source = load_backbone(backbone, weights=weights, device=device, allow_fallback=allow_fallback)
    if on_start is not None:
        on_start({"backbone": model_source.name, "weights": model_source.weights_source})
    key_source = json.dumps([pool.fingerprint, model_source.name, model_source.weights_id, model_source.pooling,
                             indices.tolist(), labels.tolist(), asdict(config)])
    folder = Path(checkpoint_dir or default_checkpoint_dir()) / hashlib.sha256(key_source.encode()).hexdigest()[:24]
    checkpoint = folder / "last.pt"

    model = _build_classifier(model_source, n_classes, config.random_state).to(model_source.device)
    decay, no_decay = [], []
    for _, parameter in model.named_parameters():  # no weight decay on norms and biases (timm's habit)
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, momentum=config.momentum)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    train_tf, test_tf = _transforms(model_source, config.image_size)
    train_set = _Split(pool, indices, labels, train_tf)
    eval_pool, eval_indices, split_name = _eval_split(pool, indices, config.eval_limit, config.random_state)
    eval_set = _Split(eval_pool, eval_indices, eval_pool.labels[eval_indices], test_tf)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = config.warmup_used * steps_per_epoch
    evaluated_epochs = [e for e in range(config.epochs) if _evaluates(e, config)]
    eval_work = len(eval_set) * EVAL_COST  # the progress fraction's units: images trained on

    def work_before(epoch: int) -> float:
        return epoch * len(train_set) + sum(e < epoch for e in evaluated_epochs) * eval_work

    total_work = work_before(config.epochs)

    history: list[dict] = []
    start_epoch = 0
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=model_source.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
    resumed_from = start_epoch
    started = time.perf_counter()

    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        torch.manual_seed(config.random_state * 100_003 + epoch)  # augmentation draws (workers: via generator)
        generator = torch.Generator().manual_seed(config.random_state * 100_003 + epoch)
        loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                                             generator=generator, num_workers=config.num_workers)
        model.train()
        total_loss, seen = 0.0, 0
        for step, (images, targets) in enumerate(loader):
            if stop():
                raise _cancelled(f"during epoch {epoch + 1} of {config.epochs}", epoch)
            lr = _lr_at(epoch * steps_per_epoch + step, total_steps, warmup_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = images.to(model_source.device), targets.to(model_source.device)
            loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * targets.shape[0]
            seen += targets.shape[0]
            report((work_before(epoch) + seen) / total_work,
                   f"epoch {epoch + 1}/{config.epochs}: loss {total_loss / seen:.3f}")
        top1 = None
        if _evaluates(epoch, config):
            def evaluated(done: int, epoch=epoch) -> None:
                report((work_before(epoch) + len(train_set) + done * EVAL_COST) / total_work,
                       f"epoch {epoch + 1}: evaluating {done:,} of {len(eval_set):,}")

            evaluated(0)
            top1 = _accuracy(model, eval_set, config, model_source.device, stop, evaluated)
            if top1 is None:  # stopped: this epoch is not checkpointed (its entry needs the evaluation)
                raise _cancelled(f"during evaluation (epoch {epoch + 1} of {config.epochs})", epoch)
        entry = {"epoch": epoch + 1, "loss": total_loss / seen, "lr": lr, "top1": top1,
                 "seconds": time.perf_counter() - epoch_start}
        history.append(entry)
        with atomic_open(checkpoint, "wb") as handle:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                        "history": history}, handle)
        if on_epoch is not None:
            on_epoch(entry)

    evaluated = [h for h in history if h["top1"] is not None]
    best = max(evaluated, key=lambda h: h["top1"])
    return FinetuneResult(history, float(evaluated[-1]["top1"]), float(best["top1"]), int(best["epoch"]), split_name,
                          len(train_set), len(eval_set), n_classes, str(checkpoint), resumed_from,
                          time.perf_counter() - started, model_source.device, "best", asdict(config),
                          model_source.name, model_source.weights_source)


def _cancelled(when: str, epochs_kept: int) -> Cancelled:
    """What stops a cancelled run: one line short enough for the run history's column
    ("Cancelled during epoch 3 of 10"), and ``epochs_kept``, the finished epochs its
    checkpoint holds for a resume (said by whoever shows it: the app's Finetune page)."""
    error = Cancelled(f"Cancelled {when}")
    error.epochs_kept = epochs_kept
    return error


def _evaluates(epoch: int, config: FinetuneConfig) -> bool:
    """Whether epoch ``epoch`` (from 0) ends with an evaluation: every ``eval_every``-th, and the last."""
    return (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs


def _accuracy(model, dataset: _Split, config: FinetuneConfig, device: str,
              stop: Callable[[], bool], evaluated: Callable[[int], None]) -> float | None:
    """Top-1 of ``model`` on ``dataset``; None when ``stop`` asked to stop. ``evaluated``
    is told after each batch how many images are done."""
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=max(config.batch_size, 64), shuffle=False,
                                         num_workers=config.num_workers)
    model.eval()
    correct = done = 0
    with torch.inference_mode():
        for images, targets in loader:
            if stop():
                return None
            correct += int((model(images.to(device)).argmax(dim=1).cpu() == targets).sum())
            done += targets.shape[0]
            evaluated(done)
    return correct / len(dataset)
