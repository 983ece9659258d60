"""Session set-up: no network, an empty private hub cache, full-precision matmuls for parity, quick compiles."""

import os
import shutil
import tempfile

# huggingface_hub reads these when it is first imported, so they are set before anything imports it.
_HUB_CACHE = tempfile.mkdtemp(prefix="jaxbackbones-hub-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = _HUB_CACHE
os.environ["JAXBACKBONES_CACHE"] = os.path.join(_HUB_CACHE, "converted")
os.environ.pop("HF_HOME", None)

from helpers import QUICK_COMPILE_FLAGS  # noqa: E402

# Set before jax starts; subprocesses (the 8-device run, the CLI) inherit them.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), *QUICK_COMPILE_FLAGS]))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def hub_cache():
    """The offline hub cache every test shares (HF_HUB_CACHE)."""
    yield _HUB_CACHE
    shutil.rmtree(_HUB_CACHE, ignore_errors=True)


# The suite's longest tests (30-90 s each on 2 cores), started first: run last, one of them keeps a worker busy
# while the other has finished.
LONGEST_FIRST = ("test_notebooks.py::", "test_sharding.py::test_on_8_virtual_devices", "test_readme.py::",
                 "test_cli.py::test_models_lists_every_family", "test_vitdet.py::test_full_size_sam_vit_b_at_1024",
                 "test_rt_detr_resnet.py::test_frozen_batch_norm_in_train_mode")


def pytest_collection_modifyitems(config, items):
    """Deselect `multidevice` tests in a session with fewer than 8 devices, and start the longest tests first.

    The multidevice ones need `--xla_force_host_platform_device_count=8` before jax starts; test_on_8_virtual_devices
    runs them in a subprocess that has it, so here they are not run (and not reported as skipped).
    """
    items.sort(key=lambda item: not any(name in item.nodeid for name in LONGEST_FIRST))  # stable: order kept
    if jax.device_count() >= 8:
        return
    deselected = [item for item in items if item.get_closest_marker("multidevice")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("multidevice")]
