"""Hyper-parameter search (§2.18): random search — never a grid — over a TOML search space,
log-scale sampling, coarse-to-fine rounds, trials run in parallel on Dask distributed.

    lamina hparams digits-mlp --trials 16                   # a local cluster sized to the machine
    lamina hparams digits-mlp --trials 64 --scheduler tcp://host:8786   # any running Dask scheduler

`space` defines the distributions and how a key names a recipe setting, `search` drives the
trials on Dask, `results` stores them (resumable), `plot` draws them, `command` is the CLI.
"""
from .results import TrialRecord
from .search import SearchResult, TrialSpec, local_cluster, run_search, train_trial
from .space import (Choice, IntUniform, LogUniform, OneMinusLogUniform, SearchSpace, Uniform, apply_params,
                    default_space, load_space, setting_path)

__all__ = ["SearchSpace", "Uniform", "LogUniform", "OneMinusLogUniform", "IntUniform", "Choice", "load_space",
           "default_space", "setting_path", "apply_params", "run_search", "train_trial", "local_cluster",
           "SearchResult", "TrialSpec", "TrialRecord"]
