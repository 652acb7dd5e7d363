"""DICOMweb (dicomweb-client): read a study's radiographs by WADO-RS, store results by STOW-RS.

``predict --dicomweb URL --study UID`` uses both; the DICOM node stores by STOW-RS when it is
given ``--stow URL``. Instances are fetched one by one to files (never a whole study in
memory), and a rerun fetches only what is missing. A server that cannot be reached, a study it
does not have and a store it refuses are one line each, naming the URL.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from pneumoseg.data.read_filter import ReadFilter
from pneumoseg.errors import PneumosegError
from pneumoseg.infer.dicom_outputs import DicomOutputs
from pneumoseg.infer.predict import safe_name
from pneumoseg.io import atomic_save

logger = logging.getLogger(__name__)


@dataclass
class FetchedStudy:
    paths: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # SOPInstanceUID -> why it is not read

    def render(self, study_uid: str) -> str:
        line = f"study {study_uid}: {len(self.paths)} radiographs to read"
        if self.skipped:
            line += f", {len(self.skipped)} other instances skipped (" + "; ".join(
                f"{uid}: {why}" for uid, why in list(self.skipped.items())[:3]) + ("; ..." if len(self.skipped) > 3 else "") + ")"
        return line


def _client(url: str):
    try:
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        raise PneumosegError("DICOMweb needs dicomweb-client: pip install 'pneumoseg[node]'") from None
    if not url.startswith(("http://", "https://")):
        raise PneumosegError(f"{url}: a DICOMweb URL starts with http:// or https://")
    client = DICOMwebClient(url)
    # One try per request: a server that is down is said at once (the node retries with its own
    # backoff; pull mode is rerun), not after half a minute of silent retries.
    client.set_http_retry_params(retry=False)
    return client


def _failure(url: str, exc: Exception, doing: str) -> PneumosegError:
    """One line for a request that did not succeed: the HTTP status, or why the server was not reached."""
    response = getattr(exc, "response", None)
    if response is not None:
        return PneumosegError(f"{url}: {doing} was refused: HTTP {response.status_code} {response.reason}")
    return PneumosegError(f"{url}: cannot reach the DICOMweb server ({type(exc).__name__}) while {doing}")


def fetch_study(url: str, study_uid: str, folder: Path, read_filter: ReadFilter = ReadFilter()) -> FetchedStudy:
    """Download the study's instances that ``read_filter`` accepts into ``folder`` as
    ``<SOPInstanceUID>.dcm`` (kept: a rerun downloads only what is missing)."""
    import requests

    client = _client(url)
    try:
        metadata = client.retrieve_study_metadata(study_uid)
    except requests.RequestException as exc:
        if getattr(exc, "response", None) is not None and exc.response.status_code == 404:
            raise PneumosegError(f"{url}: no study {study_uid}") from None
        raise _failure(url, exc, f"reading study {study_uid}") from None
    fetched = FetchedStudy()
    folder.mkdir(parents=True, exist_ok=True)
    for item in tqdm(metadata, desc="WADO-RS", unit="instance", leave=False):
        with warnings.catch_warnings():  # a malformed value elsewhere in the header is not ours to fix
            warnings.simplefilter("ignore")
            header = Dataset.from_json(item)
        uid = str(header.get("SOPInstanceUID", ""))
        reason = read_filter.reason_to_skip(header) if uid else "no SOPInstanceUID"
        if reason is not None:
            fetched.skipped[uid or "(none)"] = reason
            continue
        path = folder / f"{safe_name(uid)}.dcm"
        if not path.exists():
            try:
                instance = client.retrieve_instance(study_uid, str(header.SeriesInstanceUID), uid)
            except requests.RequestException as exc:
                raise _failure(url, exc, f"reading instance {uid}") from None
            atomic_save(path, instance.save_as)
        fetched.paths.append(path)
    return fetched


def store_datasets(url: str, datasets: Sequence[Dataset]) -> None:
    """STOW-RS ``datasets``; raises a one-line :class:`PneumosegError` unless every one was stored."""
    import requests

    if not datasets:
        return
    client = _client(url)
    try:
        response = client.store_instances(list(datasets))
    except requests.RequestException as exc:
        raise _failure(url, exc, f"storing {len(datasets)} objects") from None
    failed = [str(item.get("ReferencedSOPInstanceUID", "?")) for item in response.get("FailedSOPSequence", [])]
    stored = {str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])}
    missing = [str(ds.SOPInstanceUID) for ds in datasets if str(ds.SOPInstanceUID) not in stored]
    if failed or missing:
        raise PneumosegError(f"{url}: {len(set(failed) | set(missing))} of {len(datasets)} objects were not "
                             f"stored (e.g. {(failed or missing)[0]})")


def store_study_results(url: str, outputs: DicomOutputs, study_uids: Collection[str], *, chunk: int = 16) -> int:
    """STOW-RS the objects in ``outputs`` (SEG, SR, Secondary Capture) that belong to the
    studies, ``chunk`` at a time (a study's objects never all sit in memory); how many were stored."""
    paths = [path for folder in (outputs.seg, outputs.sr, outputs.sc) if folder for path in sorted(folder.glob("*.dcm"))
             if str(pydicom.dcmread(path, stop_before_pixels=True).get("StudyInstanceUID", "")) in study_uids]
    for start in tqdm(range(0, len(paths), chunk), desc="STOW-RS", unit="batch", leave=False):
        store_datasets(url, [pydicom.dcmread(path) for path in paths[start:start + chunk]])
    return len(paths)
