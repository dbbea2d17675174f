import pytest

from tests.serve.serve_fakes import tiny_policy
from vlaforge.serve.server import PolicyServer


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


@pytest.fixture(scope="module")
def server(policy):
    with PolicyServer(policy, "127.0.0.1", 0).running_in_thread() as srv:
        yield srv
