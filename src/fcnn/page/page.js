// The draw-a-digit page of python -m fcnn.serve. Plain JavaScript, nothing loaded from
// elsewhere. The drawing is sent as a PNG to POST /predict/with-input, which prepares it
// exactly as an uploaded image (fcnn.data.images) and answers with the probabilities and
// the (C, H, W) image the model saw.
"use strict";

(function () {
  const PREDICT_URL = "/predict/with-input";
  const TIMEOUT_MS = 15000;
  const TOP = 5; // classes shown as bars
  const STROKE = 22; // pen width in canvas pixels (the canvas is 280 wide): MNIST-like strokes

  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const clearButton = document.getElementById("clear");
  const classifyButton = document.getElementById("classify");
  const message = document.getElementById("message");
  const modelInfo = document.getElementById("model-info");
  const prediction = document.getElementById("prediction");
  const bars = document.getElementById("bars");
  const seen = document.getElementById("seen");
  const seenCaption = document.getElementById("seen-caption");

  let classes = null; // from /metadata
  let supported = true;
  let drawing = null; // the pointer drawing a stroke, with its last point
  let request = 0; // answers to older requests are dropped

  function say(text, kind) {
    message.textContent = text;
    message.className = "message" + (kind ? " " + kind : "");
  }

  function percent(p) {
    return (100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1) + "%";
  }

  function unreachable(err) {
    const why = err && err.name === "AbortError" ? "no answer within " + TIMEOUT_MS / 1000 + " s"
      : "the connection failed";
    return "Cannot reach the server at " + window.location.origin + " (" + why + "). " +
      "Is python -m fcnn.serve still running? Start it again, then press Classify.";
  }

  async function fetchWithTimeout(url, options) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      return await fetch(url, Object.assign({ signal: abort.signal, cache: "no-store" }, options));
    } finally {
      clearTimeout(timer);
    }
  }

  async function errorDetail(response) {
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") return body.detail;
    } catch (e) { /* not JSON: fall through */ }
    return response.statusText || "no detail";
  }

  // --- drawing -------------------------------------------------------------------------

  function clearPad() {
    // Opaque white: the PNG then needs no alpha (the server composites transparent
    // pixels onto white too, so a transparent canvas would not turn black either).
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * pad.width) / box.width,
      y: ((event.clientY - box.top) * pad.height) / box.height,
    };
  }

  function segment(a, b) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = STROKE;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
  }

  pad.addEventListener("pointerdown", (event) => {
    if (!supported || drawing) return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    const p = point(event);
    drawing = { id: event.pointerId, last: p };
    segment(p, p); // a tap leaves a dot
  });

  pad.addEventListener("pointermove", (event) => {
    if (!drawing || event.pointerId !== drawing.id) return;
    event.preventDefault();
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of events.length ? events : [event]) {
      const p = point(e);
      segment(drawing.last, p);
      drawing.last = p;
    }
  });

  function endStroke(event) {
    if (!drawing || event.pointerId !== drawing.id) return;
    drawing = null;
    classify();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  // --- the answer ----------------------------------------------------------------------

  function resetAnswer() {
    prediction.textContent = "–";
    bars.replaceChildren();
    const s = seen.getContext("2d");
    s.clearRect(0, 0, seen.width, seen.height);
    seenCaption.textContent = "The image the model saw";
  }

  function showBars(probabilities) {
    const order = probabilities.map((p, k) => k).sort((a, b) => probabilities[b] - probabilities[a]);
    const items = order.slice(0, Math.min(TOP, order.length)).map((k) => {
      const li = document.createElement("li");
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = classes ? classes[k] : String(k);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("role", "img");
      bar.setAttribute("aria-label", label.textContent + ": " + percent(probabilities[k]));
      const fill = document.createElement("span");
      fill.style.width = (100 * probabilities[k]).toFixed(1) + "%";
      bar.appendChild(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = percent(probabilities[k]);
      li.append(label, bar, value);
      return li;
    });
    bars.replaceChildren(...items);
  }

  function showSeen(input) {
    // input: (C, H, W) raw intensities in [0, 1], light digit on black, as MNIST.
    const plane = input[0];
    const h = plane.length, w = plane[0].length;
    seen.width = w;
    seen.height = h;
    const s = seen.getContext("2d");
    const img = s.createImageData(w, h);
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const v = Math.round(255 * plane[r][c]);
        const i = 4 * (r * w + c);
        img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
        img.data[i + 3] = 255;
      }
    }
    s.putImageData(img, 0, 0);
    seenCaption.textContent = "The " + h + "×" + w + " image the model saw";
  }

  async function classify() {
    if (!supported) return;
    const mine = ++request;
    say("Classifying…", "info");
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const form = new FormData();
    form.append("file", blob, "drawing.png");
    let response;
    try {
      response = await fetchWithTimeout(PREDICT_URL, { method: "POST", body: form });
    } catch (err) {
      if (mine === request) say(unreachable(err), "error");
      return;
    }
    if (mine !== request) return;
    if (!response.ok) {
      const detail = await errorDetail(response);
      if (mine !== request) return;
      resetAnswer();
      if (response.status === 422 && detail.startsWith("the image is empty")) {
        say("The canvas is empty: draw a digit first.", "error");
      } else {
        say("The server answered " + response.status + ": " + detail, "error");
      }
      return;
    }
    let body;
    try {
      body = await response.json();
    } catch (err) {
      if (mine === request) say("The server's answer was not JSON: " + err, "error");
      return;
    }
    if (mine !== request) return;
    prediction.textContent = body.label;
    showBars(body.probabilities);
    showSeen(body.input);
    say("", "");
  }

  clearButton.addEventListener("click", () => {
    request++; // an answer on its way belongs to the old drawing
    clearPad();
    resetAnswer();
    say(supported ? "Draw a digit in the box." : message.textContent, supported ? "info" : "error");
  });
  classifyButton.addEventListener("click", classify);

  // --- the model -----------------------------------------------------------------------

  async function loadMetadata() {
    let response;
    try {
      response = await fetchWithTimeout("/metadata");
    } catch (err) {
      modelInfo.textContent = "Model unknown: the server could not be reached.";
      say(unreachable(err), "error");
      return;
    }
    if (!response.ok) {
      say("The server answered " + response.status + ": " + (await errorDetail(response)), "error");
      return;
    }
    const meta = await response.json();
    classes = meta.classes;
    const name = (meta.model && meta.model.name) || "model";
    const shape = meta.input_shape;
    const parts = [
      "Model " + name + (meta.dataset ? " trained on " + meta.dataset : ""),
      meta.classes.length + " classes: " + meta.classes.join(", "),
      typeof meta.test_accuracy === "number"
        ? "test accuracy " + (100 * meta.test_accuracy).toFixed(2) + "%"
        : "test accuracy not recorded",
      "input " + shape.join("×"),
    ];
    modelInfo.textContent = parts.join(" · ");
    if (shape[0] !== 1 || shape[1] !== shape[2]) {
      supported = false;
      pad.classList.add("disabled");
      clearButton.disabled = true;
      classifyButton.disabled = true;
      say(
        "Drawing is not supported for this model: it takes " + shape.join("×") +
          " images (channels × height × width), and a drawing is a 1-channel square image. " +
          "Send images to the API instead (see /docs).",
        "error"
      );
      return;
    }
    say("Draw a digit in the box.", "info");
  }

  clearPad();
  loadMetadata();
})();
