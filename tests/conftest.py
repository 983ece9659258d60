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


def pytest_collection_modifyitems(config, items):
    """Deselect `multidevice` tests in a session with fewer than 8 devices.

    They need `--xla_force_host_platform_device_count=8` before jax starts; test_on_8_virtual_devices runs
    them in a subprocess that has it, so here they are not run (and not reported as skipped).
    """
    if jax.device_count() >= 8:
        return
    deselected = [item for item in items if item.get_closest_marker("multidevice")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("multidevice")]
