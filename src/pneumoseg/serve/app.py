"""The web viewer: drop a chest X-ray DICOM on a page and see the predicted pneumothorax outlined.

:func:`create_app` builds the FastAPI app around any :class:`TwoStagePipeline` (tests inject a
tiny one); :func:`serve` loads two trained runs and runs it with uvicorn
(``pneumoseg serve --cls RUN --seg RUN``).

Endpoints
---------
``POST /api/predict``
    Multipart form with the DICOM in the field ``file``. Answers
    ``{image_id, probability, positive, area_px, area_mm2, rle}``: the classifier probability
    (null when the pipeline has no classifier), whether a region is outlined, its area in pixels
    of the image's own size and in mm² (from Pixel Spacing; null without it), and the relative
    (SIIM submission) RLE of the 1024×1024 mask. 413 for a file over the limit, 415 for a file
    that is not DICOM, 422 for a DICOM that cannot be decoded; ``detail`` says why.
``GET /api/overlay/{image_id}.png``
    The X-ray at its own size with the region outlined in red (the PNG ``predict --overlays``
    writes).
``GET /api/seg/{image_id}.dcm``
    The region as a DICOM SEG on the uploaded image; 404 when nothing was outlined.
``GET /health``
    ``{"status": "ok", "max_upload_mb": ...}``.
``GET /``
    The page (``static/index.html``, ``app.js``, ``style.css``; no build step, nothing external).
``GET /api/openapi.json``
    The OpenAPI schema (no Swagger page: it would load scripts from a CDN).

Results are kept in memory for the last ``cache_size`` uploads only, keyed by the image id (the
SOPInstanceUID made safe by :func:`safe_name`; a hash of the file when it has none); an id that
is not in the cache is a 404 -- ids are never used as paths.

Privacy: the upload is decoded from memory (Starlette spools a form part over 1 MiB to an
anonymous temporary file, which has no name on disk and is closed after the request). Patient
identifiers (name, ID, birth date, ...) are blanked in the header as soon as it is read and
private tags are dropped, so no response -- the JSON, the overlay, the DICOM SEG -- and no log
line carries them; the SEG keeps the study, series and instance UIDs, so a viewer pairs it
with the original image. The upload's file name is never used. Text burnt into the pixels
themselves stays in the overlay.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from pneumoseg.data.dicom import DicomImage, read_dicom_bytes
from pneumoseg.data.rle import rle_encode
from pneumoseg.errors import DicomReadError
from pneumoseg.infer.dicom_seg import build_dicom_seg, mask_at_source_size
from pneumoseg.infer.pipeline import TwoStagePipeline
from pneumoseg.infer.predict import draw_overlay, encode_png, safe_name

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
FORM_FIELD = "file"
SUMMARY_FIELDS = ("image_id", "probability", "positive", "area_px", "area_mm2", "rle")
# Room for the multipart boundaries and part headers around the file itself.
_FORM_OVERHEAD = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

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


@dataclass
class Result:
    """What the viewer keeps of one upload: the answer, the overlay and what the SEG needs."""

    image_id: str
    probability: float | None
    positive: bool
    area_px: int
    area_mm2: float | None
    rle: str
    overlay_png: bytes = field(repr=False)
    mask_1024: np.ndarray = field(repr=False)
    header: DicomImage = field(repr=False)
    """The upload's header (identifiers blanked, no pixel data) with a zero-memory stand-in for
    the pixels: building the SEG needs only the header and the shape."""
    seg_dcm: bytes | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SUMMARY_FIELDS}


class ResultCache:
    """A thread-safe LRU of :class:`Result` by image id, holding at most ``size`` entries."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"cache_size must be at least 1, got {size}")
        self.size = size
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, result: Result) -> None:
        with self._lock:
            self._items[result.image_id] = result
            self._items.move_to_end(result.image_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, image_id: str) -> Result | None:
        with self._lock:
            result = self._items.get(image_id)
            if result is not None:
                self._items.move_to_end(image_id)
            return result

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class Viewer:
    """The app's state: the pipeline (one prediction at a time) and the results cache."""

    def __init__(self, pipeline: TwoStagePipeline, cache_size: int) -> None:
        self.pipeline = pipeline
        self.cache = ResultCache(cache_size)
        self._model_lock = threading.Lock()
        self._seg_lock = threading.Lock()

    def analyse(self, data: bytes) -> Result:
        """Decode an uploaded DICOM, predict, draw the overlay and cache the result."""
        started = time.perf_counter()
        image = _decode_upload(data)
        with self._model_lock:
            (pred,) = self.pipeline.predict([image.pixels])
        area_px = int(mask_at_source_size(pred.mask, image.shape).sum())
        spacing = image.spacing
        result = Result(
            image_id=image.image_id,
            probability=None if pred.probability is None else float(pred.probability),
            positive=pred.positive,
            area_px=area_px,
            area_mm2=None if spacing is None else round(area_px * spacing[0] * spacing[1], 2),
            rle=rle_encode(pred.mask, "relative"),
            overlay_png=encode_png(draw_overlay(image, pred.mask, pred.probability), name="the overlay"),
            mask_1024=pred.mask,
            header=replace(image, pixels=np.broadcast_to(np.float32(0), image.shape)),
        )
        self.cache.put(result)
        probability = "n/a" if result.probability is None else f"{result.probability:.3f}"
        logger.info("image %s: probability %s, %s, %d px, %.2f s", result.image_id, probability,
                    "outlined" if result.positive else "nothing outlined", area_px, time.perf_counter() - started)
        return result

    def lookup(self, image_id: str) -> Result:
        # Cache keys are sanitised ids; anything else (a path, a stale id) is simply not there.
        result = self.cache.get(image_id)
        if result is None:
            raise HTTPException(404, f"Unknown image id. Results are kept for the last {self.cache.size} "
                                     "uploads only: upload the file again.")
        return result

    def seg_bytes(self, result: Result) -> bytes:
        """The DICOM SEG of a positive result, built on first request and kept with it."""
        if result.area_px == 0:
            raise HTTPException(404, "No pneumothorax was outlined on this image, so there is no DICOM SEG.")
        with self._seg_lock:
            if result.seg_dcm is None:
                mask = mask_at_source_size(result.mask_1024, result.header.shape)
                buffer = io.BytesIO()
                build_dicom_seg(result.header, mask).save_as(buffer)
                result.seg_dcm = buffer.getvalue()
            return result.seg_dcm


def create_app(pipeline: TwoStagePipeline, *, max_upload_mb: float = 64, cache_size: int = 32) -> FastAPI:
    """The viewer app around ``pipeline``: uploads up to ``max_upload_mb`` MiB, results of the
    last ``cache_size`` uploads kept in memory."""
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    max_bytes = int(max_upload_mb * 1024 * 1024)
    viewer = Viewer(pipeline, cache_size)
    # No Swagger/ReDoc pages: they load scripts from a CDN. The schema is at /api/openapi.json.
    app = FastAPI(title="pneumoseg viewer", summary="Outline pneumothorax on chest X-ray DICOMs.",
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.viewer = viewer

    @app.post("/api/predict", openapi_extra=_UPLOAD_SCHEMA)
    async def predict(request: Request) -> dict[str, Any]:
        """Upload a DICOM (multipart field ``file``); answer the prediction summary."""
        data = await _read_upload(request, max_bytes, max_upload_mb)
        result = await run_in_threadpool(viewer.analyse, data)
        return result.summary()

    @app.get("/api/overlay/{image_id}.png", response_class=Response)
    def overlay(image_id: str) -> Response:
        """The X-ray at its own size with the predicted region outlined in red."""
        result = viewer.lookup(image_id)
        return Response(result.overlay_png, media_type="image/png",
                        headers={**_NO_STORE, **_disposition("inline", f"{result.image_id}-overlay.png")})

    @app.get("/api/seg/{image_id}.dcm", response_class=Response)
    def seg(image_id: str) -> Response:
        """The predicted region as a DICOM SEG (404 when nothing was outlined)."""
        result = viewer.lookup(image_id)
        data = viewer.seg_bytes(result)
        return Response(data, media_type="application/dicom",
                        headers={**_NO_STORE, **_disposition("attachment", f"{result.image_id}-seg.dcm")})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "max_upload_mb": max_upload_mb}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def serve(cls_run: Path | None, seg_run: Path, host: str = "127.0.0.1", port: int = 8000, *,
          device: str = "cpu", max_upload_mb: float = 64, cache_size: int = 32) -> None:
    """Load the runs and serve the viewer until interrupted."""
    import uvicorn

    from pneumoseg.infer.pipeline import build_torch_pipeline

    _log_to_stderr()
    pipeline = build_torch_pipeline(cls_run, seg_run, device=device)
    app = create_app(pipeline, max_upload_mb=max_upload_mb, cache_size=cache_size)
    logger.info("viewer on http://%s:%d/", host, port)
    uvicorn.run(app, host=host, port=port)


# --- uploads -------------------------------------------------------------------------------

_UPLOAD_SCHEMA = {
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


async def _read_upload(request: Request, max_bytes: int, max_upload_mb: float) -> bytes:
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


def _decode_upload(data: bytes) -> DicomImage:
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


def _disposition(kind: str, filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'{kind}; filename="{filename}"'}


def _log_to_stderr() -> None:
    """Show the viewer's INFO lines next to uvicorn's (without touching the root logger)."""
    package_logger = logging.getLogger("pneumoseg")
    if not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        package_logger.addHandler(handler)
        package_logger.setLevel(logging.INFO)
        package_logger.propagate = False
