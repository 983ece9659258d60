"""Session set-up: no network, an empty private hub cache, full-precision matmuls for parity."""

import os
import shutil
import tempfile

# huggingface_hub reads these when it is first imported, so they are set before anything imports it.
_HUB_CACHE = tempfile.mkdtemp(prefix="jaxbackbones-hub-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = _HUB_CACHE
os.environ["JAXBACKBONES_CACHE"] = os.path.join(_HUB_CACHE, "converted")
os.environ.pop("HF_HOME", None)

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def hub_cache():
    """The offline hub cache every test shares (HF_HUB_CACHE)."""
    yield _HUB_CACHE
    shutil.rmtree(_HUB_CACHE, ignore_errors=True)
