// The difflab page: fills the controls from GET /v1/models, sends POST /v1/images with
// stream: true and reads its server-sent events (progress, then the images).
"use strict";

const $ = (id) => document.getElementById(id);
let requests = 0;

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h.Authorization = "Bearer " + $("key").value;
  return h;
}

function fill(select, items) {
  select.replaceChildren(...items.map(([value, label]) => new Option(label, value)));
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function loadModels() {
  const r = await fetch("/v1/models", { headers: headers() });
  if (r.status === 401) {
    $("key-label").hidden = false;
    setStatus("this server needs an API key", true);
    return;
  }
  const m = await r.json();
  $("model").textContent = m.model;
  $("conditioning").textContent = m.conditioning;
  fill($("sampler"), m.samplers.map((s) => [s, s]));
  $("sampler").value = m.defaults.sampler;
  fill($("plan"), m.plans.map((p) => [p.name, p.name]));
  m.plans.forEach((p, i) => { $("plan").options[i].title = p.describe; });
  fill($("adapter"), [["", "base model"], ...m.adapters.map((a) => [a.name, a.name])]);
  fill($("size"), m.image.sizes.map((s) => [s, s + "x" + s]));
  $("key-label").hidden = !m.auth;
  setStatus("ready");
}

function body() {
  const prompts = $("prompt").value.split("\n").map((p) => p.trim()).filter((p) => p);
  const req = {
    prompt: prompts, n: +$("n").value, sampler: $("sampler").value, steps: +$("steps").value,
    guidance: +$("guidance").value, plan: $("plan").value, adapter: $("adapter").value,
    size: +$("size").value, stream: true,
  };
  if ($("seed").value !== "") req.seed = +$("seed").value;
  return req;
}

function show(result) {
  $("grid").replaceChildren(...result.images.map((im) => {
    const fig = document.createElement("figure");
    const img = new Image();
    img.src = "data:image/png;base64," + im.b64_png;
    img.alt = im.prompt;
    const cap = document.createElement("figcaption");
    cap.textContent = im.prompt + " · seed " + im.seed;
    fig.append(img, cap);
    return fig;
  }));
  const t = result.timing;
  const row = document.createElement("tr");
  const speed = t.speedup === null ? (result.settings.plan === "none" ? "1 (no plan)" : "-")
    : t.speedup.toFixed(2) + "x";
  for (const cell of [++requests, result.images.length, result.settings.plan,
    t.seconds.toFixed(2) + " s", t.queue_seconds.toFixed(2) + " s", t.batch_images,
    (1000 * t.seconds_per_image).toFixed(0) + " ms", speed]) {
    const td = document.createElement("td");
    td.textContent = cell;
    row.append(td);
  }
  $("history").tBodies[0].prepend(row);
  setStatus(result.images.length + " images in " + t.seconds.toFixed(2) + " s"
    + (t.speedup === null ? "" : ", " + t.speedup.toFixed(2) + "x faster than without the plan"));
}

function handle(event, data) {
  if (event === "queued") setStatus("queued, " + data.ahead + " requests ahead");
  else if (event === "progress") {
    $("progress").value = data.step / data.steps;
    setStatus("step " + data.step + " of " + data.steps);
  } else if (event === "done") { $("progress").value = 1; show(data); }
  else if (event === "error") setStatus(data.status + ": " + data.error, true);
}

async function generate(ev) {
  ev.preventDefault();
  $("go").disabled = true;
  $("progress").value = 0;
  setStatus("sending");
  try {
    const r = await fetch("/v1/images", { method: "POST", headers: headers(),
      body: JSON.stringify(body()) });
    if (!r.ok) {
      const err = await r.json().catch(() => ({ error: r.statusText }));
      setStatus(r.status + ": " + err.error, true);
      return;
    }
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = /^event: (.*)$/m.exec(frame);
        const data = /^data: (.*)$/m.exec(frame);
        if (event && data) handle(event[1], JSON.parse(data[1]));
      }
    }
  } catch (e) {
    setStatus("request failed: " + e, true);
  } finally {
    $("go").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", generate);
  $("key").addEventListener("change", loadModels);
  loadModels().catch((e) => setStatus("cannot reach the server: " + e, true));
});
