"""Shared fixtures: a tiny synthetic benchmark (real layouts, a few samples) generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")

TINY_VIDEOS = {"train": 3, "test": 2, "unused": 1}
TINY_IMAGES = {"train2017": 24, "val2017": 4, "test2017": 16}


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from privacy_lit.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SyntheticConfig(seed=0, videos_per_action=TINY_VIDEOS, images=TINY_IMAGES))
    return root
