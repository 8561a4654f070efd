"""The stage contract: every method the trainer, the validation pictures and the benchmarks call.

A stage says which data it reads, how to initialise its variables, what its loss is and (image
stages) how it predicts meshes; the generic loop in :mod:`hmr_jax.training.trainer` does the
rest (sharding, optimizer, checkpoints, logging). Every stage subclasses :class:`Stage` and
implements its abstract methods; nothing is looked up by ``hasattr``.

Data: a stage builds this process's batches with :mod:`hmr_jax.data`'s pipelines, which apply
the one multi-host rule (:func:`hmr_jax.data.pipeline.host_share`: one global training stream
whatever the number of processes, each reading its contiguous slice of every global batch;
evaluation passes read records ``i, i+n, ...``). Examples are dicts of NumPy arrays; a batch is
the same dict with a leading batch axis (sharded over devices by the trainer).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Hashable, Iterable, Mapping

import flax.struct
import grain
import jax
import numpy as np

#: salt of the host-side draws' generator (seeded with (seed, step, salt))
_DRAW_SALT = 0x64726177


@flax.struct.dataclass
class Variables:
    """A stage's trainable variables.

    params: trained by the optimizer. model_state: mutable collections updated by the forward
    pass (BatchNorm ``batch_stats``, the VQ codebook EMA ``vq_stats``), checkpointed with params.
    (Constants the loss reads but never changes, such as the frozen tokenizer, come from
    ``Stage.frozen()`` instead and are not checkpointed.)
    """

    params: Any
    model_state: Any = dataclasses.field(default_factory=dict)


@flax.struct.dataclass
class LossOutput:
    """What ``Stage.loss`` returns besides the scalar loss.

    terms: named scalar loss terms (each is logged). model_state: the updated mutable
    collections. valid: False when the original would have skipped this step (for example a
    MEGA batch with no masked token, whose cross-entropy the original finds NaN and drops).
    """

    terms: Mapping[str, jax.Array]
    model_state: Any
    valid: jax.Array | bool = True


@dataclasses.dataclass(frozen=True)
class StepDraws:
    """Random choices a stage makes on the host before a training step (:meth:`Stage.step_draws`).

    program: a hashable, static value the loss may branch on in Python (a sequence length, say);
      the trainer compiles one train step per distinct value, so keep the set small.
    values: name -> NumPy scalar / array passed into the step as traced arrays (the same shapes
      at every step).
    """

    program: Hashable = None
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Stage(abc.ABC):
    """Base class of a training stage (see the module docstring).

    Attributes:
      name: the ``config.stage`` that selects it.
      backbone: the crop of the images it reads (a key of
        :data:`hmr_jax.data.augment.BACKBONE_INPUTS`: hrnet / resnet / vit), or None for a stage
        that reads no images; image stages implement :meth:`predict` (validation pictures).
      config: the training config.
    """

    name: ClassVar[str] = "stage"
    backbone: str | None = None

    def __init__(self, config):
        self.config = config

    # -- data ---------------------------------------------------------------------------
    @abc.abstractmethod
    def train_pipeline(self, local_batch: int, seed: int) -> tuple[grain.IterDataset, int]:
        """This process's infinite stream of training batches (``local_batch`` examples each,
        augmented, shuffled with ``seed``) and the number of optimizer steps per epoch."""

    @abc.abstractmethod
    def val_batches(self, local_batch: int) -> Iterable[dict] | None:
        """This process's validation batches (full batches only), or None for no validation."""

    def frozen(self) -> Any:
        """Constant pytree passed to ``loss`` / ``validate`` / ``predict`` (frozen tokenizer,
        joint regressors); not checkpointed."""
        return {}

    # -- model --------------------------------------------------------------------------
    @abc.abstractmethod
    def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> Variables:
        """Initial variables for a batch of the training shapes (called under ``jax.jit``)."""

    def load_pretrained(self, variables: Variables) -> Variables:
        """Put converted / previously trained weights (``config.init``) into fresh variables."""
        return variables

    def step_draws(self, step: int, seed: int) -> StepDraws:
        """The host-side draws of training step ``step``: :meth:`draws_at` of one uniform number
        from a NumPy generator seeded with ``(seed, step)`` (so a resumed run repeats them and
        every process agrees)."""
        u = np.random.default_rng([int(seed), int(step), _DRAW_SALT]).random()
        return self.draws_at(float(u))

    def draws_at(self, u: float) -> StepDraws:
        """The host-side draws for a uniform ``u`` in [0, 1) (the inverse of their distribution;
        the benchmarks time steps at fixed quantiles). Default: none."""
        return StepDraws()

    @abc.abstractmethod
    def loss(self, params, model_state, frozen, batch, rng: jax.Array,
             step: jax.Array, draws: StepDraws) -> tuple[jax.Array, LossOutput]:
        """Scalar training loss of ``batch`` and its ``LossOutput`` (pure, traced by jit).

        ``draws``: this step's :meth:`step_draws` (``program`` static, ``values`` traced)."""

    @abc.abstractmethod
    def validate(self, params, model_state, frozen, batch) -> Mapping[str, jax.Array]:
        """Per-sample validation metrics ``{name: (B,)}`` (averaged by the trainer)."""

    def predict(self, params, model_state, frozen, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Deterministic prediction of image stages (pure, traced by jit).

        Args:
          images: (B, H, W, 3) normalised crops of :attr:`backbone`.
        Returns:
          posed meshes (B, V, 3) in meters (camera-aligned axes) and weak-perspective cameras
          (B, 3) ``(s, tx, ty)``.
        """
        raise NotImplementedError(f"stage {self.name!r} reads no images and predicts no meshes from them")
