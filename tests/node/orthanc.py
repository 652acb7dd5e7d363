"""A real PACS for the tests: Debian's Orthanc (packages ``orthanc`` and ``orthanc-dicomweb``,
installed by `make test`), started with a generated config: its own DICOM and HTTP ports, a
temporary storage folder, HTTP answered for loopback only, DICOM accepted only from the
modalities registered here (on 127.0.0.1), and the DICOMweb plugin at ``/dicom-web``.

Orthanc 1.10 has no option to bind its ports to loopback alone; with ``RemoteAccessAllowed``
false and ``DicomAlwaysAllowStore`` false it refuses any other host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import stop_process
from tests.node.test_receiver import _free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_executable() -> str:
    executable = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if executable is None or not DICOMWEB_PLUGIN.exists():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed: `make test` installs them with "
                    "`apt-get install -y orthanc orthanc-dicomweb`")
    return executable


class Orthanc:
    """One Orthanc process; ``modalities``: name -> (AE title, port) of the peers on 127.0.0.1."""

    ae_title = "ORTHANC"

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, int]]) -> None:
        self.folder, self.process, self.log = folder, None, None
        self.dicom_port, self.http_port = _free_port(), _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "pneumoseg-test", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"), "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": False, "DicomCheckModalityHost": True,
            "DicomModalities": {name: [aet, "127.0.0.1", port] for name, (aet, port) in modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout_s: float = 60) -> None:
        self.log = open(self.folder / "orthanc.log", "a")
        self.process = subprocess.Popen([orthanc_executable(), str(self.config)], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.get("/system")
                return
            except OSError:
                assert self.process.poll() is None, f"Orthanc exited: see {self.folder / 'orthanc.log'}"
                assert time.monotonic() < deadline, "Orthanc did not answer"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body) -> object:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def study_instances(self, study_uid: str) -> list[dict]:
        """Every instance of the study, as Orthanc's simplified tags (no pixel data)."""
        found = self.post("/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}})
        return [self.get(f"/instances/{orthanc_id}/simplified-tags") for orthanc_id in found]

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])
