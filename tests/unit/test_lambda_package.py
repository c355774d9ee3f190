"""fnbench functions package --lambda: reproducible ZIPs with the handler Lambda will look for."""

import json
import zipfile

from orchestrator.subjects import lambda_package


def test_python_and_node_packages_are_reproducible(tmp_path):
    for runtime, handler_file, handler in (("python", "handler.py", "handler.handler"), ("node", "index.mjs", "index.handler")):
        a = lambda_package.package(runtime, tmp_path / "a")
        b = lambda_package.package(runtime, tmp_path / "b")
        assert a["sha256"] == b["sha256"] and a["handler"] == handler
        with zipfile.ZipFile(a["zip"]) as zf:
            assert handler_file in zf.namelist()
            assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        assert json.loads((tmp_path / "a" / f"{runtime}.json").read_text())["lambda_runtime"] in ("python3.12", "nodejs20.x")
