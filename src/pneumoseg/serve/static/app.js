// pneumoseg viewer: upload DICOMs, list them as a worklist, show each outlined X-ray and its
// numbers (canvas.js draws the image). No dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  viewer: $("viewer"), drop: $("drop"), file: $("file"), figure: $("figure"), tools: $("tools"),
  preset: $("preset"), toggle: $("toggle-outline"), opacity: $("opacity"), fit: $("fit"),
  worklistBox: $("worklist-box"), worklist: $("worklist"), busy: $("busy"), busyText: $("busy-text"), error: $("error"),
  intro: $("intro"), result: $("result"), verdict: $("verdict"), legend: $("legend"), probability: $("probability"),
  meterFill: $("meter-fill"), area: $("area"), areaDetail: $("area-detail"), imageId: $("image-id"),
  dlOverlay: $("dl-overlay"), dlSeg: $("dl-seg"), segNote: $("seg-note"), rle: $("rle"), another: $("another"),
  tokenForm: $("token-form"), token: $("token"), size: $("size"), sizeDetail: $("size-detail"),
};
let maxUploadMb = null;
let segUrl = null;  // the current result's SEG, fetched when its button is pressed
const entries = [];  // the worklist: {name, result, image, overlayUrl, item} per file, in upload order
const TOKEN_KEY = "pneumoseg-token";

fetch("/health").then((r) => (r.ok ? r.json() : null)).then((h) => {
  if (!h) return;
  maxUploadMb = h.max_upload_mb;
  if (h.token_required && !sessionStorage.getItem(TOKEN_KEY)) askForToken();
}).catch(() => {});

function askForToken() {
  els.tokenForm.hidden = false;
  els.token.focus();
}

els.tokenForm.addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, els.token.value.trim());
  els.token.value = "";
  els.tokenForm.hidden = true;
  els.error.hidden = true;
});

// Every API call carries the token (when the server has one); a 401 asks for it again.
async function api(url, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  let response;
  try {
    response = await fetch(url, { ...options, headers });
  } catch (_) {
    throw Object.assign(new Error("Could not reach the server. Is `pneumoseg serve` still running?"), { title: "No connection. " });
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken();
    throw Object.assign(new Error("Enter the server's access token, then try again."), { title: "Access token needed. " });
  }
  return response;
}

async function blobUrl(url, what) {
  const response = await api(url);
  if (!response.ok) throw Object.assign(new Error(await errorMessage(response)), { title: `No ${what}. ` });
  return URL.createObjectURL(await response.blob());
}

function showError(title, message) {
  els.error.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = title;
  els.error.append(strong, document.createTextNode(message || ""));
  els.error.hidden = false;
}

function setBusy(text) {
  els.busy.hidden = !text;
  if (text) els.busyText.textContent = text;
}

async function errorMessage(response) {
  // FastAPI answers {"detail": "..."}; anything else (a proxy's page) gets a generic line.
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || String(d)).join("; ");
  } catch (_) { /* not JSON */ }
  if (response.status === 413) return "The file is larger than this server accepts.";
  return `The server answered ${response.status} ${response.statusText}.`;
}

function formatArea(result) {
  if (!result.area_px) return ["none", "nothing outlined"];
  const px = `${result.area_px.toLocaleString()} px`;
  if (result.area_mm2 === null) return [px, "(no Pixel Spacing in the file, so no size in mm²)"];
  const cm2 = result.area_mm2 / 100;
  return [`${cm2.toFixed(cm2 < 10 ? 1 : 0)} cm²`, `(${Math.round(result.area_mm2).toLocaleString()} mm², ${px})`];
}

function formatSize(m) {
  // BTS 2023 class and the numbers it rests on (docs/measurements.md); pixels without calibration.
  if (!m || m.side === "none") return ["none", "nothing outlined"];
  const side = m.side === "both" ? "both sides" : `patient's ${m.side}${m.side_assumed ? " (assumed: frontal film)" : ""}`;
  if (m.lateral_mm === null) {
    return ["unknown", `${side}; rim ${m.lateral_px} px, apex ${m.apical_px} px (no calibration in the file)`];
  }
  return [`BTS ${m.bts_class}`, `${side}; lateral rim ${m.lateral_mm.toFixed(0)} mm, apex ${m.apical_mm.toFixed(0)} mm (ACCP ${m.accp_class})`];
}

function showResult(result, overlayUrl) {
  const id = encodeURIComponent(result.id);
  els.verdict.textContent = result.positive ? "Pneumothorax outlined" : "No pneumothorax found";
  els.verdict.className = "verdict " + (result.positive ? "positive" : "negative");
  els.legend.hidden = !result.area_px;

  if (result.probability === null) {
    els.probability.textContent = "n/a";
    els.meterFill.style.width = "0";
  } else {
    const pct = result.probability * 100;
    els.probability.textContent = `${pct < 1 ? pct.toFixed(1) : Math.round(pct)}%`;
    els.meterFill.style.width = `${pct}%`;
    els.meterFill.style.background = result.positive ? "var(--red)" : "var(--accent)";
  }
  const [area, detail] = formatArea(result);
  els.area.textContent = area;
  els.areaDetail.textContent = detail;
  const [size, sizeDetail] = formatSize(result.measurements);
  els.size.textContent = size;
  els.sizeDetail.textContent = sizeDetail;
  els.imageId.textContent = result.image_id;
  els.rle.textContent = result.rle;

  els.dlOverlay.href = overlayUrl;  // the PNG with the outline burned in, as predict --overlays writes
  els.dlOverlay.download = `${result.image_id}-overlay.png`;
  const hasSeg = result.area_px > 0;
  els.dlSeg.hidden = !hasSeg;
  els.segNote.hidden = hasSeg;
  segUrl = hasSeg ? `/api/seg/${id}.dcm` : null;
  if (els.dlSeg.href.startsWith("blob:")) URL.revokeObjectURL(els.dlSeg.href);
  els.dlSeg.href = "#";
  els.dlSeg.download = `${result.image_id}-seg.dcm`;
  els.intro.hidden = true;
  els.result.hidden = false;
  els.another.hidden = false;
}

async function blobOf(url, what) {
  const response = await api(url);
  if (!response.ok) throw Object.assign(new Error(await errorMessage(response)), { title: `No ${what}. ` });
  return response.blob();
}

function addToWorklist(name) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  const label = document.createElement("span");
  label.textContent = name;
  const tag = document.createElement("span");
  tag.className = "tag";
  tag.textContent = "…";
  button.append(label, tag);
  item.append(button);
  els.worklist.append(item);
  els.worklistBox.hidden = false;
  const entry = { name, item, button, tag };
  button.addEventListener("click", () => { if (entry.result) select(entry); });
  entries.push(entry);
  return entry;
}

function select(entry) {
  for (const other of entries) other.button.setAttribute("aria-current", String(other === entry));
  XrayView.show(entry.image);
  els.drop.hidden = true;
  els.figure.hidden = false;
  els.tools.hidden = false;
  showResult(entry.result, entry.overlayUrl);
}

async function analyseOne(file, entry) {
  const form = new FormData();
  form.append("file", file);
  const response = await api("/api/predict", { method: "POST", body: form });
  if (!response.ok) {
    throw Object.assign(new Error(await errorMessage(response)), { title: `Could not analyse ${file.name}. ` });
  }
  const result = await response.json();
  const id = encodeURIComponent(result.id);
  const [image, mask, overlay] = await Promise.all([
    blobOf(`/api/image/${id}.png`, "image"), blobOf(`/api/mask/${id}.png`, "outline"),
    blobOf(`/api/overlay/${id}.png`, "outlined image")]);
  entry.image = await XrayView.load(image, mask);
  entry.overlayUrl = URL.createObjectURL(overlay);
  entry.result = result;
  entry.tag.textContent = result.positive ? "outlined" : "none";
  entry.tag.classList.add(result.positive ? "positive" : "negative");
}

async function analyse(files) {
  els.error.hidden = true;
  const chosen = Array.from(files || []);
  for (const [k, file] of chosen.entries()) {
    const entry = addToWorklist(file.name);
    if (maxUploadMb !== null && file.size > maxUploadMb * 1024 * 1024) {
      showError("File too large. ", `${file.name} is ${(file.size / 1048576).toFixed(1)} MB; this server accepts up to ${maxUploadMb} MB.`);
      entry.tag.textContent = "too large";
      entry.tag.classList.add("failed");
      continue;
    }
    setBusy(`Analysing ${file.name}${chosen.length > 1 ? ` (${k + 1} of ${chosen.length})` : ""}…`);
    try {
      await analyseOne(file, entry);
      select(entry);
    } catch (err) {
      entry.tag.textContent = "failed";
      entry.tag.classList.add("failed");
      showError(err.title || "Something went wrong. ", err.message);
    }
  }
  setBusy(null);
  els.file.value = "";  // choosing the same file again still triggers "change"
}

els.file.addEventListener("change", () => analyse(els.file.files));
els.preset.addEventListener("change", () => XrayView.setPreset(els.preset.value));
els.opacity.addEventListener("input", () => XrayView.setOpacity(els.opacity.value / 100));
els.fit.addEventListener("click", () => XrayView.fit());
function toggleOutline() {
  els.toggle.setAttribute("aria-pressed", String(XrayView.toggleOutline()));
}
els.toggle.addEventListener("click", toggleOutline);
document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || els.figure.hidden) return;
  if (e.key === "o" || e.key === "O") toggleOutline();
  if (e.key === "0") XrayView.fit();
});
els.dlSeg.addEventListener("click", async (e) => {
  if (els.dlSeg.href.startsWith("blob:") || !segUrl) return;  // fetched already: let the browser save it
  e.preventDefault();
  try {
    els.dlSeg.href = await blobUrl(segUrl, "DICOM SEG");
    els.dlSeg.click();
  } catch (err) {
    showError(err.title || "Something went wrong. ", err.message);
  }
});
els.another.addEventListener("click", () => els.file.click());

// Drop anywhere on the page, not just on the target.
let dragDepth = 0;
document.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth += 1; els.viewer.classList.add("dragging"); });
document.addEventListener("dragleave", () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) els.viewer.classList.remove("dragging"); });
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  els.viewer.classList.remove("dragging");
  const files = e.dataTransfer && e.dataTransfer.files;
  if (files && files.length) analyse(files);
});
