"""The training recipe, explicit and identical for every backend."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

OPTIMIZERS = ("sgd", "adam", "adamw")
#: mixed-precision formats (``Recipe.amp``, ``--amp``; ``None`` is float32): common/train/trainer.py
AMP = ("bf16", "fp16")


def step_loss(out, loss_of, aux_weight: float):
    """(main logits, the loss a training step optimises) for a network's output.

    ``out`` is the logits, or the named tuple ``(logits, aux2, aux1)`` of a network with
    auxiliary heads in training mode; ``loss_of(logits)`` is the framework's batch loss.
    With aux heads: main loss + ``aux_weight`` x each auxiliary loss (the paper's 0.3).
    """
    if not isinstance(out, tuple):
        return out, loss_of(out)
    return out[0], loss_of(out[0]) + aux_weight * sum(loss_of(a) for a in out[1:])


def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    return name


@dataclass
class Recipe:
    """How a network is trained, every field explicit and identical for every backend.

    The defaults are the book's recipe (d2l 8.4): 10 epochs, batch 128, plain SGD lr 0.1,
    96x96, Xavier-uniform init, cross-entropy, no schedule, no augmentation.  The other
    fields are the pieces of modern recipes (torchvision's, PaddleClas's), each computed or
    applied identically on the four backends:

    * optimiser: ``optimizer`` (sgd, adam, adamw), ``momentum``, ``nesterov``,
      ``weight_decay`` (coupled for sgd/adam, decoupled for adamw), ``clip_norm``
      (global gradient norm; 0 = off), ``label_smoothing``: see ``common.train.trainer``;
    * schedule (``common.train.schedules``): ``schedule`` (constant, step, cosine, onecycle),
      ``warmup_epochs``, ``step_epochs`` and ``gamma`` (step), ``final_lr_factor`` (cosine);
    * augmentation (``common.train.augment``): ``crop_padding``, ``flip``, ``erase``;
    * multi-scale: ``train_scales`` (one input size per ``scale_every`` steps, drawn from the
      seed) and ``test_scales`` (the softmax averaged over these sizes at evaluation);
    * precision: ``amp`` (``None``: float32; ``'bf16'``, ``'fp16'``: mixed precision with the
      framework's own API, see ``common.train.trainer``);
    * fine-tuning (``common.train.finetune``, docs/finetune.md): ``freeze`` (``'none'``,
      ``'body'``, ``'upto:STAGE'``: those stages are not trained, their batch norms stay in
      inference mode) and ``body_lr_factor`` (the body's learning rate over the head's).
    """
    num_epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    resize: int = 96
    seed: int = 0
    aux_weight: float = 0.3
    nesterov: bool = False
    label_smoothing: float = 0.0
    clip_norm: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_epochs: int = 30
    gamma: float = 0.1
    final_lr_factor: float = 0.0
    crop_padding: int = 0
    flip: bool = False
    erase: float = 0.0
    train_scales: Tuple[int, ...] = ()
    test_scales: Tuple[int, ...] = ()
    scale_every: int = 1
    amp: Optional[str] = None
    freeze: str = "none"
    body_lr_factor: float = 1.0

    def __post_init__(self):
        self.train_scales = tuple(int(s) for s in self.train_scales or ())
        self.test_scales = tuple(int(s) for s in self.test_scales or ())

    def trainer_kwargs(self) -> dict:
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                    optimizer=self.optimizer, aux_weight=self.aux_weight, nesterov=self.nesterov,
                    label_smoothing=self.label_smoothing, clip_norm=self.clip_norm or None,
                    amp=self.amp, freeze=self.freeze, body_lr_factor=self.body_lr_factor)

    def schedule_kwargs(self) -> dict:
        return dict(name=self.schedule, warmup_epochs=self.warmup_epochs, step_epochs=self.step_epochs,
                    gamma=self.gamma, final_lr_factor=self.final_lr_factor)

    def augment(self):
        from .augment import Augment
        return Augment(crop_padding=self.crop_padding, flip=self.flip, erase=self.erase)

    def sizes(self) -> Tuple[int, ...]:
        """Every input size the run needs: the training size, the train and test scales."""
        return tuple(sorted({self.resize, *self.train_scales, *self.test_scales}))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train_scales"], d["test_scales"] = list(self.train_scales), list(self.test_scales)
        return d


#: Named recipes: a set of recipe fields (and model options under ``"model"``); command-line
#: flags override them, and a run record stores the resolved values.
RECIPES = {
    # The book's chapter as written: plain SGD, constant lr 0.1, no augmentation.
    "book": dict(),
    # Few epochs to high accuracy on a CPU: batch norm (no plateau), Nesterov momentum,
    # cosine schedule after a one-epoch warm-up, weight decay, label smoothing, shifts and
    # mirrors; 64x64 inputs (2.25x cheaper than 96x96; 32x32 underfits on a held-out part of
    # the training split: docs/recipes.md, docs/results.md).
    "fast": dict(model=dict(preset="bn", aux_logits=False), num_epochs=12, batch_size=64, lr=0.05,
                 momentum=0.9, nesterov=True, weight_decay=5e-4, label_smoothing=0.1,
                 schedule="cosine", warmup_epochs=1, resize=64, crop_padding=6, flip=True),
}


def named_recipe(name: str) -> Tuple[Recipe, dict]:
    """(the recipe, its model options) of a named recipe."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    fields = dict(RECIPES[name])
    model = fields.pop("model", {})
    return Recipe(**fields), dict(model)
