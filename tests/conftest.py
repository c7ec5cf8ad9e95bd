import os

import numpy as np
import pytest

# Keep thread counts predictable on the 2-core CI machine. Under pytest-xdist (`make test` runs two
# workers) each worker gets one thread: two processes spinning two threads each on two cores is slower
# than either alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
