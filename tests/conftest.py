"""Shared fixtures. The contract mixin's fixtures live here so pytest finds them for every model."""

import pytest

from contract import contract_data


@pytest.fixture(scope="class")
def data():
    """The contract's small seeded interactions."""
    return contract_data()


@pytest.fixture(scope="class")
def fitted(request, data):
    """One model of the requesting contract class, fitted on ``data``."""
    return request.cls().make_model().fit(data)
