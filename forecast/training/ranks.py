"""Which process of a distributed (DDP) run this is, from the environment its launcher sets."""

from __future__ import annotations

import os


def ddp_rank_from_env(env: dict[str, str] | None = None) -> int:
    """0 for the process that runs the command (the pipeline, a training); > 0 for the other DDP processes.

    Any non-zero rank variable makes a process a worker: torchrun's ``RANK``, SLURM's ``SLURM_PROCID``
    (under ``srun``), and Lightning's own launcher, which re-executes the command with ``LOCAL_RANK``
    (and ``NODE_RANK`` on other nodes) set. A child of Lightning's launcher inherits the parent's
    environment (e.g. ``SLURM_PROCID=0`` of a batch script) plus ``LOCAL_RANK>0``: hence "any
    non-zero", not "the first one found".
    The value is the largest of them, not necessarily the exact global rank.
    """
    env = os.environ if env is None else env
    ranks = [int(env[k]) for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK") if env.get(k, "").isdigit()]
    return max(ranks, default=0)
