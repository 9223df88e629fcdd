"""Shared fixtures: the built-in tiny model, loaded once per test session."""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model():
    from freescale.models.loading import load_model, resolve_model_source

    torch.set_num_threads(2)
    return load_model(resolve_model_source("tiny"), device="cpu")
