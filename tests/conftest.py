import functools

import pytest

from partopt.graph import LayerGraph
from partopt.zoo import example_input, load_model


@functools.lru_cache(maxsize=None)
def zoo_case(name: str):
    """(module, input, graph) for a zoo model, built once per test session."""
    module, shape, _ = load_model(name)
    x = example_input(shape)
    return module, x, LayerGraph.from_module(module, x)


@pytest.fixture
def zoo():
    return zoo_case
