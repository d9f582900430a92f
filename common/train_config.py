"""The training recipe, explicit and identical for every backend."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

OPTIMIZERS = ("sgd", "adam")


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
    """The book's recipe (d2l 8.4): 10 epochs, batch 128, plain SGD lr 0.1, 96x96,
    Xavier-uniform init, cross-entropy.  Every field can be overridden."""
    num_epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    resize: int = 96
    seed: int = 0
    aux_weight: float = 0.3

    def trainer_kwargs(self) -> dict:
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                    optimizer=self.optimizer, aux_weight=self.aux_weight)

    def to_dict(self) -> dict:
        return asdict(self)
