"""Reading an upload: the multipart body counted as it arrives, then the DICOM decoded from
memory with its patient identifiers blanked (see :mod:`pneumoseg.serve.app` on privacy)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from pneumoseg.data.dicom import DicomImage, read_dicom_bytes
from pneumoseg.errors import DicomReadError
from pneumoseg.infer.predict import safe_name

FORM_FIELD = "file"
# Room for the multipart boundaries and part headers around the file itself.
_FORM_OVERHEAD = 64 * 1024

# Blanked (kept, but empty) as soon as an upload's header is read. Type 2 attributes of the
# patient and study modules must stay present: highdicom copies them into the SEG.
PATIENT_IDENTIFIERS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator",
    "PatientComments", "AccessionNumber", "StudyID", "ReferringPhysicianName", "PhysiciansOfRecord",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "OperatorsName",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
)

UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [FORM_FIELD],
            "properties": {FORM_FIELD: {"type": "string", "format": "binary", "description": "A DICOM file."}},
        }}},
    }
}


class _TooLarge(Exception):
    pass


def _too_large(max_upload_mb: float) -> HTTPException:
    return HTTPException(413, f"The file is larger than this server accepts ({max_upload_mb:g} MB).")


async def read_upload(request: Request, max_bytes: int, max_upload_mb: float) -> bytes:
    """The uploaded file's bytes; the body is counted as it arrives and never exceeds the limit."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, f"Send the DICOM file as multipart/form-data, in a field named '{FORM_FIELD}'.")
    budget = max_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > budget:
        raise _too_large(max_upload_mb)
    counted = Request(request.scope, _counting(request.receive, budget))
    try:
        form = await counted.form(max_files=1, max_fields=8)
    except _TooLarge:
        raise _too_large(max_upload_mb) from None
    except StarletteHTTPException as exc:  # Starlette's 400 for a malformed form
        raise HTTPException(422, f"The upload is not a readable form: {exc.detail}") from None
    try:
        upload = form.get(FORM_FIELD)
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, f"No file in the upload: send the DICOM in a form field named '{FORM_FIELD}'.")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise _too_large(max_upload_mb)
    return data


def _counting(receive: Callable[[], Awaitable[dict]], budget: int) -> Callable[[], Awaitable[dict]]:
    """``receive`` that raises :class:`_TooLarge` once the body passes ``budget`` bytes."""
    received = 0

    async def counting_receive() -> dict:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > budget:
                raise _TooLarge
        return message

    return counting_receive


def decode_upload(data: bytes) -> DicomImage:
    """Decode an uploaded DICOM with its patient identifiers blanked and pixel data dropped."""
    if not data:
        raise HTTPException(422, "The uploaded file is empty.")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise HTTPException(415, "This is not a DICOM file (no 'DICM' marker after the 128-byte preamble). "
                                 "Choose a chest X-ray saved as DICOM (.dcm).")
    name = f"upload-{hashlib.sha256(data).hexdigest()[:16]}"  # the image id when there is no SOPInstanceUID
    try:
        image = read_dicom_bytes(data, name=f"{name}.dcm")
    except DicomReadError as exc:
        reason = str(exc).removeprefix(f"{name}.dcm: ")
        raise HTTPException(422, f"This DICOM file cannot be read: {reason}") from None
    _blank_identifiers(image.dataset)
    if "PixelData" in image.dataset:
        del image.dataset.PixelData  # decoded already; the SEG needs only the header
    return replace(image, image_id=_ascii_id(image.image_id))


def _blank_identifiers(ds: Dataset) -> None:
    """Empty the identifying attributes and drop the top-level private tags.

    Elements are replaced without being read: pydicom converts a raw element when it is
    accessed, and a validation warning about its value could quote the value in the log."""
    for keyword in PATIENT_IDENTIFIERS:
        tag = tag_for_keyword(keyword)
        if tag is not None and tag in ds:
            del ds[tag]
            vr = dictionary_VR(tag)
            ds.add_new(tag, vr, [] if vr == "SQ" else "")
    for tag in [tag for tag in ds.keys() if tag.is_private]:
        del ds[tag]


def _ascii_id(image_id: str) -> str:
    """:func:`safe_name` restricted to ASCII (ids go into URLs and header values)."""
    return "".join(c if c.isascii() else "_" for c in safe_name(image_id))
