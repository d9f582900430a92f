"""The training recipe, explicit and identical for every backend."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

OPTIMIZERS = ("sgd", "adam")


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
