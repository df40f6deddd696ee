import os
import sys

import pytest
import torch

# Tests import k7lib from the source tree whether or not it is pip-installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# One thread: the tensors are small, and the notebook test's kernel and the resume test's
# subprocesses run beside this process; more threads only oversubscribe the two cores.
torch.set_num_threads(1)


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)
