"""The `shared_data(NAME)` marker: a test that needs NAME in the shared data folder
(`gen3d.settings.data_dir`: $GEN3D_DATA, else shared/data beside the checkout) is skipped with
that reason when it is missing, and fails instead under GEN3D_REQUIRE_SHARED=1 (set by
`make test`, which CI runs, where the data is always present)."""

import os

import pytest

from gen3d.settings import data_dir


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for marker in item.iter_markers("shared_data"):
        path = data_dir(required=False) / marker.args[0]
        if path.exists():
            continue
        reason = f"needs the shared data {path} (set GEN3D_DATA or put shared/data beside the checkout)"
        if os.environ.get("GEN3D_REQUIRE_SHARED") == "1":
            pytest.fail(f"{reason}; GEN3D_REQUIRE_SHARED=1 turns this skip into a failure", pytrace=False)
        pytest.skip(reason)
