"""Checkpoint I/O: ``.nemo`` archives, megatron distributed checkpoints, Lightning checkpoints and ``init_from``
(weights and, from a Lightning checkpoint, the optimizer state), each read without running code stored in the file.

Sits below ``models`` in the package layering (see ``tests/test_layers.py``): nothing here imports a model class;
where one is needed it is an argument (:func:`load_trained`) or the built module itself (:func:`load_weights`).

>>> from nemo_salad.checkpoint import resolve_checkpoint
>>> resolve_checkpoint("/nonexistent/run.ckpt")
'/nonexistent/run.ckpt'
"""

from nemo_salad.checkpoint.checkpoint_io import SafeCheckpointIO
from nemo_salad.checkpoint.distributed import (
    is_distributed_checkpoint,
    load_distributed,
    resolve_checkpoint,
    save_distributed,
    sharded_state_dict,
    strategy_hyper_parameters,
)
from nemo_salad.checkpoint.init_optimizer import checkpoint_optimizer_state, restore_optimizer_state
from nemo_salad.checkpoint.init_weights import RestorableModel, load_trained, load_weights
from nemo_salad.checkpoint.nemo_io import (
    SafeSaveRestoreConnector,
    UnsafeArchiveError,
    check_archive_members,
    safe_restore_from,
)
from nemo_salad.checkpoint.safe_checkpoint import UnsafeCheckpointError, safe_checkpoint_reading
from nemo_salad.checkpoint.torch_adam_state import checkpointable_torch_adam

__all__ = [
    "RestorableModel",
    "SafeCheckpointIO",
    "SafeSaveRestoreConnector",
    "UnsafeArchiveError",
    "UnsafeCheckpointError",
    "check_archive_members",
    "checkpoint_optimizer_state",
    "checkpointable_torch_adam",
    "is_distributed_checkpoint",
    "load_distributed",
    "load_trained",
    "load_weights",
    "resolve_checkpoint",
    "restore_optimizer_state",
    "safe_checkpoint_reading",
    "safe_restore_from",
    "save_distributed",
    "sharded_state_dict",
    "strategy_hyper_parameters",
]
