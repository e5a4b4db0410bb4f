import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def lm():
    from optimizers.workloads import load_workload

    return load_workload("ref-lm")


@pytest.fixture(scope="session")
def minilm():
    from optimizers.workloads import load_workload

    return load_workload("minilm")
