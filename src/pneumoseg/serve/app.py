"""The web viewer: drop a chest X-ray DICOM on a page and see the predicted pneumothorax outlined.

:func:`create_app` builds the FastAPI app around any :class:`TwoStagePipeline` (tests inject a
tiny one); :func:`serve` loads two trained runs and runs it with uvicorn
(``pneumoseg serve --cls RUN --seg RUN``).

Endpoints
---------
``POST /api/predict``
    Multipart form with the DICOM in the field ``file``. Answers
    ``{id, image_id, probability, positive, area_px, area_mm2, rle, measurements}``: ``id`` is a random key of
    this upload's result (the only way to fetch its overlay and SEG), then the classifier
    probability (null when the pipeline has no classifier), whether a region is outlined, its
    area in pixels of the image's own size and in mm² (from Pixel Spacing; null without it), and
    the relative (SIIM submission) RLE of the 1024×1024 mask, and ``measurements``: side, lateral
    rim and apical distance (mm, or px without calibration), BTS and ACCP class (docs/measurements.md). 413 for a file over the limit, 415
    for a file that is not DICOM, 422 for a DICOM that cannot be decoded; ``detail`` says why.
``GET /api/overlay/{id}.png``
    The X-ray at its own size with the region outlined in red (the PNG ``predict --overlays``
    writes).
``GET /api/image/{id}.png``, ``GET /api/mask/{id}.png``
    The X-ray as displayed (8-bit grey, nothing drawn) and the region (0/255), both at the
    image's own size: the page windows the one and outlines the other itself.
``GET /api/seg/{id}.dcm``
    The region as a DICOM SEG on the uploaded image; 404 when nothing was outlined, 422 when the
    header cannot carry a SEG (no StudyInstanceUID, say).
``GET /health``
    ``{"status": "ok", "max_upload_mb": ..., "token_required": ...}``.
``GET /``
    The page (``static/index.html``, ``app.js``, ``style.css``; no build step, nothing external).
``GET /api/openapi.json``
    The OpenAPI schema (no Swagger page: it would load scripts from a CDN).

Access (:mod:`pneumoseg.serve.security`): the ``Host`` header must be an allowed name, a
cross-origin request is refused unless its origin is listed, and with a token every ``/api/``
call needs ``Authorization: Bearer``; without a token the server listens on loopback only.

Memory: results are kept for the last ``cache_size`` uploads only (an LRU keyed by the random
id), each holding its overlay, image and mask PNGs, its 1024×1024 mask (1 MiB) and, once
asked for, its SEG;
a key that is not in the cache is a 404 -- keys are never used as paths. So memory is bounded
by the models, one upload being decoded per worker thread, and ``cache_size`` results
(docs/reliability.md gives the figure measured under load).

Privacy: the upload is decoded from memory (Starlette spools a form part over 1 MiB to an
anonymous temporary file, which has no name on disk and is closed after the request). Patient
identifiers (name, ID, birth date, ...) are blanked in the header as soon as it is read and
private tags are dropped, so no response -- the JSON, the overlay, the DICOM SEG -- and no log
line carries them; the SEG keeps the study, series and instance UIDs, so a viewer pairs it
with the original image. The upload's file name is never used. Text burnt into the pixels
themselves stays in the overlay.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from pneumoseg.data.dicom import DicomImage
from pneumoseg.data.rle import rle_encode
from pneumoseg.infer.dicom_seg import build_dicom_seg, mask_at_source_size
from pneumoseg.infer.pipeline import TwoStagePipeline
from pneumoseg.infer.drawing import draw_overlay, encode_png
from pneumoseg.infer.findings import image_measurement
from pneumoseg.runtime import log_to_stderr
from pneumoseg.serve.security import LOOPBACK_NAMES, Guard, check_bind
from pneumoseg.serve.uploads import UPLOAD_SCHEMA, decode_upload, read_upload

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
SUMMARY_FIELDS = ("id", "image_id", "probability", "positive", "area_px", "area_mm2", "rle", "measurements")
MEASUREMENT_FIELDS = ("side", "side_assumed", "lateral_mm", "apical_mm", "lateral_px", "apical_px", "bts_class",
                      "accp_class", "calibration")
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass
class Result:
    """What the viewer keeps of one upload: the answer, the overlay and what the SEG needs."""

    image_id: str
    probability: float | None
    positive: bool
    area_px: int
    area_mm2: float | None
    rle: str
    measurements: dict[str, Any]
    """Side, lateral rim, apical distance, BTS / ACCP class and calibration (data.measurements)."""
    overlay_png: bytes = field(repr=False)
    image_png: bytes = field(repr=False)
    """The X-ray as displayed (8-bit grey, its own size, nothing drawn): the page windows it."""
    mask_png: bytes = field(repr=False)
    """The outlined region at the image's own size (0 / 255): the page draws and toggles it."""
    mask_1024: np.ndarray = field(repr=False)
    header: DicomImage = field(repr=False)
    """The upload's header (identifiers blanked, no pixel data) with a zero-memory stand-in for
    the pixels: building the SEG needs only the header and the shape."""
    seg_dcm: bytes | None = field(default=None, repr=False)
    id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    """The upload's own key: random, so that a result cannot be fetched by guessing (the
    SOPInstanceUID is no secret), and two uploads of one image never replace each other."""

    def summary(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SUMMARY_FIELDS}


class ResultCache:
    """A thread-safe LRU of :class:`Result` by :attr:`Result.id`, holding at most ``size`` entries."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"cache_size must be at least 1, got {size}")
        self.size = size
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, result: Result) -> None:
        with self._lock:
            self._items[result.id] = result
            self._items.move_to_end(result.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, result_id: str) -> Result | None:
        with self._lock:
            result = self._items.get(result_id)
            if result is not None:
                self._items.move_to_end(result_id)
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
        image = decode_upload(data)
        with self._model_lock:
            (pred,) = self.pipeline.predict([image.pixels])
        mask = mask_at_source_size(pred.mask, image.shape)
        area_px = int(mask.sum())
        spacing = image.spacing
        measured = image_measurement(image, mask).row()
        result = Result(
            image_id=image.image_id,
            probability=None if pred.probability is None else float(pred.probability),
            positive=pred.positive,
            area_px=area_px,
            area_mm2=None if spacing is None else round(area_px * spacing[0] * spacing[1], 2),
            rle=rle_encode(pred.mask, "relative"),
            measurements={k: measured[k] for k in MEASUREMENT_FIELDS},
            overlay_png=encode_png(draw_overlay(image, pred.mask, pred.probability), name="the overlay"),
            image_png=encode_png(np.clip(np.rint(image.pixels * 255), 0, 255).astype(np.uint8), name="the image"),
            mask_png=encode_png(mask.astype(np.uint8) * 255, name="the mask"),
            mask_1024=pred.mask,
            header=replace(image, pixels=np.broadcast_to(np.float32(0), image.shape)),
        )
        self.cache.put(result)
        probability = "n/a" if result.probability is None else f"{result.probability:.3f}"
        logger.info("image %s: probability %s, %s, %d px, %.2f s", result.image_id, probability,
                    "outlined" if result.positive else "nothing outlined", area_px, time.perf_counter() - started)
        return result

    def lookup(self, result_id: str) -> Result:
        # Cache keys are random ids; anything else (a UID, a path, a stale id) is simply not there.
        result = self.cache.get(result_id)
        if result is None:
            raise HTTPException(404, f"Unknown result id. Results are kept for the last {self.cache.size} "
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
                try:
                    build_dicom_seg(result.header, mask).save_as(buffer)
                except Exception as exc:  # highdicom raises assorted errors on headers it cannot use
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    raise HTTPException(422, f"No DICOM SEG can be made for this image: {reason}.") from None
                result.seg_dcm = buffer.getvalue()
            return result.seg_dcm


def create_app(pipeline: TwoStagePipeline, *, max_upload_mb: float = 64, cache_size: int = 32,
               token: str | None = None, allowed_hosts: Sequence[str] = LOOPBACK_NAMES,
               cors_origins: Sequence[str] = ()) -> FastAPI:
    """The viewer app around ``pipeline``: uploads up to ``max_upload_mb`` MiB, results of the
    last ``cache_size`` uploads kept in memory, behind :class:`~pneumoseg.serve.security.Guard`
    (``token``, ``allowed_hosts``, ``cors_origins``)."""
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    max_bytes = int(max_upload_mb * 1024 * 1024)
    viewer = Viewer(pipeline, cache_size)
    # No Swagger/ReDoc pages: they load scripts from a CDN. The schema is at /api/openapi.json.
    app = FastAPI(title="pneumoseg viewer", summary="Outline pneumothorax on chest X-ray DICOMs.",
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.viewer = viewer
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, cors_origins=cors_origins)
    if cors_origins:  # outermost: it answers the browser's preflight, which carries no token
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization"])

    @app.post("/api/predict", openapi_extra=UPLOAD_SCHEMA)
    async def predict(request: Request) -> dict[str, Any]:
        """Upload a DICOM (multipart field ``file``); answer the prediction summary."""
        data = await read_upload(request, max_bytes, max_upload_mb)
        result = await run_in_threadpool(viewer.analyse, data)
        return result.summary()

    @app.get("/api/overlay/{result_id}.png", response_class=Response)
    def overlay(result_id: str) -> Response:
        """The X-ray at its own size with the predicted region outlined in red."""
        result = viewer.lookup(result_id)
        return Response(result.overlay_png, media_type="image/png",
                        headers={**_NO_STORE, **_disposition("inline", f"{result.image_id}-overlay.png")})

    @app.get("/api/image/{result_id}.png", response_class=Response)
    def plain_image(result_id: str) -> Response:
        """The X-ray as displayed, 8-bit grey at its own size, nothing drawn (the page windows it)."""
        return Response(viewer.lookup(result_id).image_png, media_type="image/png", headers=_NO_STORE)

    @app.get("/api/mask/{result_id}.png", response_class=Response)
    def mask_image(result_id: str) -> Response:
        """The outlined region at the image's own size, 0 or 255 (the page draws its outline)."""
        return Response(viewer.lookup(result_id).mask_png, media_type="image/png", headers=_NO_STORE)

    @app.get("/api/seg/{result_id}.dcm", response_class=Response)
    def seg(result_id: str) -> Response:
        """The predicted region as a DICOM SEG (404 when nothing was outlined, 422 when the
        image's header cannot carry one, e.g. it has no StudyInstanceUID)."""
        result = viewer.lookup(result_id)
        data = viewer.seg_bytes(result)
        return Response(data, media_type="application/dicom",
                        headers={**_NO_STORE, **_disposition("attachment", f"{result.image_id}-seg.dcm")})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "max_upload_mb": max_upload_mb, "token_required": bool(token)}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def serve(cls_run: Path | None, seg_run: Path, host: str = "127.0.0.1", port: int = 8000, *,
          device: str = "cpu", max_upload_mb: float = 64, cache_size: int = 32, token: str | None = None,
          allowed_hosts: Sequence[str] = LOOPBACK_NAMES, cors_origins: Sequence[str] = ()) -> None:
    """Load the runs and serve the viewer until interrupted (refused before loading anything
    when ``host`` is not loopback and there is no ``token``)."""
    import uvicorn

    from pneumoseg.infer.pipeline import build_torch_pipeline

    check_bind(host, token)
    log_to_stderr()
    pipeline = build_torch_pipeline(cls_run, seg_run, device=device)
    app = create_app(pipeline, max_upload_mb=max_upload_mb, cache_size=cache_size, token=token,
                     allowed_hosts=allowed_hosts, cors_origins=cors_origins)
    logger.info("viewer on http://%s:%d/", host, port)
    uvicorn.run(app, host=host, port=port)


def _disposition(kind: str, filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'{kind}; filename="{filename}"'}
