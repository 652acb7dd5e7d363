// pneumoseg viewer: the X-ray on a canvas, windowed, zoomed and panned in the browser, with
// the predicted region outlined (toggle, opacity). No dependencies.
"use strict";

const PRESETS = {  // level / width on the displayed 8-bit grey (already windowed by the header)
  full: [128, 256], lung: [96, 192], lucent: [64, 128], bone: [184, 144],
};

const XrayView = (() => {
  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const state = { image: null, level: 128, width: 256, outline: true, opacity: 1, zoom: 1, panX: 0, panY: 0 };
  let pending = false;

  function pixels(bitmap) {
    // The first channel of a decoded PNG, as bytes.
    const scratch = document.createElement("canvas");
    scratch.width = bitmap.width;
    scratch.height = bitmap.height;
    const c = scratch.getContext("2d");
    c.drawImage(bitmap, 0, 0);
    const rgba = c.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const out = new Uint8Array(bitmap.width * bitmap.height);
    for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
    return out;
  }

  function outlineOf(mask, w, h) {
    // The region's edge (an on pixel with an off 4-neighbour), thickened as the PNG overlays are.
    const edge = new Uint8Array(w * h);
    const r = Math.max(1, Math.round(Math.max(w, h) / 600));
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!mask[i]) continue;
        const border = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
          !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
        if (!border) continue;
        for (let dy = -r; dy <= r; dy++) {
          for (let dx = -r; dx <= r; dx++) {
            const yy = y + dy, xx = x + dx;
            if (yy >= 0 && yy < h && xx >= 0 && xx < w) edge[yy * w + xx] = 1;
          }
        }
      }
    }
    return edge;
  }

  async function load(imageBlob, maskBlob) {
    const [image, mask] = await Promise.all([createImageBitmap(imageBlob), createImageBitmap(maskBlob)]);
    const w = image.width, h = image.height;
    return { w, h, grey: pixels(image), edge: outlineOf(pixels(mask), w, h) };
  }

  function draw() {
    pending = false;
    const img = state.image;
    if (!img) return;
    if (canvas.width !== img.w || canvas.height !== img.h) {
      canvas.width = img.w;
      canvas.height = img.h;
    }
    const out = ctx.createImageData(img.w, img.h);
    const d = out.data;
    const low = state.level - state.width / 2;
    const gain = 255 / Math.max(1, state.width);
    const alpha = state.outline ? state.opacity : 0;
    for (let i = 0, j = 0; i < img.grey.length; i++, j += 4) {
      let v = (img.grey[i] - low) * gain;
      v = v < 0 ? 0 : v > 255 ? 255 : v;
      if (alpha > 0 && img.edge[i]) {
        d[j] = v + (255 - v) * alpha;
        d[j + 1] = d[j + 2] = v * (1 - alpha);
      } else {
        d[j] = d[j + 1] = d[j + 2] = v;
      }
      d[j + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    canvas.style.transform = `translate(${state.panX}px, ${state.panY}px) scale(${state.zoom})`;
  }

  function redraw() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  }

  function show(image) {
    state.image = image;
    fit();
  }

  function fit() {
    state.zoom = 1;
    state.panX = state.panY = 0;
    redraw();
  }

  function setPreset(name) {
    [state.level, state.width] = PRESETS[name] || PRESETS.full;
    redraw();
  }

  function toggleOutline(on = !state.outline) {
    state.outline = on;
    redraw();
    return on;
  }

  function setOpacity(value) {
    state.opacity = value;
    redraw();
  }

  // Left drag: window (horizontal) and level (vertical); shift+drag or right drag: pan; wheel: zoom.
  let drag = null;
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, pan: e.shiftKey || e.button === 2 };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag.x = e.clientX;
    drag.y = e.clientY;
    if (drag.pan) {
      state.panX += dx;
      state.panY += dy;
    } else {
      state.width = Math.min(512, Math.max(2, state.width + 2 * dx));
      state.level = Math.min(255, Math.max(0, state.level + dy));
    }
    redraw();
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    state.zoom = Math.min(8, Math.max(1, state.zoom * Math.exp(-e.deltaY * 0.0015)));
    redraw();
  }, { passive: false });

  return { load, show, fit, setPreset, toggleOutline, setOpacity, state };
})();
