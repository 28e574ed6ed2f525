// vramplan calculator page: fills the pickers from the API, posts the form, draws the result.
// No dependencies; works offline. Calls the API with this page's session (HttpOnly cookie +
// X-Vramplan-Page header), so visitors never paste a token.
"use strict";

(function () {
  const form = document.getElementById("calc-form");
  const api = form.dataset.api;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                   "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
  let gpus = [];

  const pageSession = form.dataset.pageSession === "true";

  function call(path, body) {
    const headers = { "Accept": "application/json" };
    if (pageSession) headers["X-Vramplan-Page"] = "1";
    else headers["Authorization"] = "Bearer " + $("api_token").value.trim();
    const init = { credentials: "same-origin", headers: headers };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(api + "/" + path, init).then((resp) =>
      resp.json().catch(() => ({})).then((data) => ({ ok: resp.ok, status: resp.status, data })));
  }

  function showError(data, status) {
    const box = $("error");
    box.textContent = "";
    let message = (data && data.message) || ("request failed (HTTP " + status + ")");
    if (status === 401) {
      message += pageSession ? " — reload the page to start a new session." : " — check the API token above.";
    }
    box.appendChild(document.createTextNode(message));
    const list = document.createElement("ul");
    ((data && data.errors) || []).forEach((e) => {
      const li = document.createElement("li");
      li.textContent = (e.field ? e.field + ": " : "") + e.message +
        (e.closest && e.closest.length ? " (closest: " + e.closest.join(", ") + ")" : "");
      list.appendChild(li);
    });
    if (list.children.length) box.appendChild(list);
    box.hidden = false;
  }

  function fillSelect(select, items, valueOf, labelOf, preferred) {
    select.textContent = "";
    items.forEach((item) => {
      const opt = document.createElement("option");
      opt.value = valueOf(item);
      opt.textContent = labelOf(item);
      select.appendChild(opt);
    });
    if (items.some((i) => valueOf(i) === preferred)) select.value = preferred;
  }

  function mode() {
    return form.querySelector("input[name=mode]:checked").value;
  }

  function syncMode() {
    form.querySelectorAll("fieldset[data-mode]").forEach((fs) => {
      const on = fs.dataset.mode === mode();
      fs.hidden = !on;
      fs.disabled = !on;
    });
  }

  function syncCustomGpu() {
    const custom = $("gpu_key").value.startsWith("custom");
    form.querySelectorAll(".custom-only").forEach((el) => { el.hidden = !custom; });
  }

  // The request body: every enabled control, typed; empty optional fields are left out so the
  // server's defaults apply.
  function requestBody() {
    const body = {};
    const controls = form.querySelectorAll("input, select");
    controls.forEach((el) => {
      if (!el.name || el.name === "mode" || el.disabled || el.closest("fieldset:disabled")) return;
      if (el.closest(".custom-only") && el.closest(".custom-only").hidden) return;
      let value;
      if (el.type === "checkbox") value = el.checked;
      else if (el.value === "") return;
      else if (el.type === "number" || el.dataset.type === "int") value = Number(el.value);
      else value = el.value;
      if (el.dataset.group) {
        body[el.dataset.group] = body[el.dataset.group] || {};
        body[el.dataset.group][el.name] = value;
      } else {
        body[el.name] = value;
      }
    });
    return body;
  }

  function fmt(value, digits) {
    if (typeof value !== "number" || !isFinite(value)) return String(value);
    return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  function capacityGiB(result, body) {
    if (body.custom_vram) return body.custom_vram;
    const gpu = gpus.find((g) => g.key === body.gpu_key);
    if (gpu && gpu.memory) return gpu.memory;
    const pct = result.actual_vram_percentage || result.vram_percentage;
    return pct ? result.vram_usage * 100 / pct : result.vram_usage;
  }

  function svgEl(name, attrs, parent) {
    const el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach((k) => el.setAttribute(k, attrs[k]));
    if (parent) parent.appendChild(el);
    return el;
  }

  // A stacked horizontal bar: one segment per memory component, scaled to the GPU's capacity (or to
  // the usage where it exceeds it, with a red capacity line).
  function drawChart(details, capacity) {
    const svg = $("memory-chart");
    const legend = $("chart-legend");
    svg.textContent = "";
    legend.textContent = "";
    const entries = Object.entries(details).filter(([, v]) => typeof v === "number" && v > 0);
    const used = entries.reduce((s, [, v]) => s + v, 0);
    const scale = 1000 / Math.max(capacity, used, 1e-9);
    svgEl("rect", { x: 0, y: 10, width: 1000, height: 40, class: "capacity" }, svg);
    let x = 0;
    entries.forEach(([label, value], i) => {
      const w = value * scale;
      const color = PALETTE[i % PALETTE.length];
      const rect = svgEl("rect", { x: x, y: 10, width: Math.max(w, 0.5), height: 40, fill: color,
                                   class: "segment", "data-label": label, "data-gib": value }, svg);
      svgEl("title", {}, rect).textContent = label + ": " + fmt(value, 2) + " GiB";
      x += w;
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.backgroundColor = color;
      li.appendChild(sw);
      li.appendChild(document.createTextNode(label + " " + fmt(value, 2) + " GiB"));
      legend.appendChild(li);
    });
    const cap = capacity * scale;
    svgEl("line", { x1: cap, x2: cap, y1: 2, y2: 58, class: used > capacity ? "limit over" : "limit" }, svg);
    const text = svgEl("text", { x: Math.min(cap, 995), y: 68, "text-anchor": "end", class: "limit-label" }, svg);
    text.textContent = "GPU capacity " + fmt(capacity, 1) + " GiB";
  }

  function fillTable(tbody, rows) {
    tbody.textContent = "";
    rows.forEach((cells) => {
      const tr = document.createElement("tr");
      cells.forEach((c, i) => {
        const td = document.createElement(i === 0 ? "th" : "td");
        td.textContent = c;
        if (i > 0) td.className = "num";
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  const INFERENCE_FIGURES = [
    ["estimated_latency_tps", "Decode speed, one sequence", "tokens/s", 1],
    ["estimated_throughput_tps", "Throughput, all sequences", "tokens/s", 1],
    ["per_user_tps", "Per user", "tokens/s", 1],
    ["ms_per_token", "Time per token", "ms", 1],
    ["tftt", "Time to first token", "ms", 0],
    ["static_shared_memory", "Shared by all users", "GiB", 2],
    ["per_user_memory", "Added per user", "GiB", 2],
    ["estimated_system_ram_required", "System RAM required", "GiB", 1],
    ["offloaded_memory", "Offloaded", "GiB", 2],
    ["estimated_power_draw", "Power draw", "W", 0],
  ];
  const FINETUNING_FIGURES = [
    ["training_tps", "Training throughput", "tokens/s", 1],
    ["samples_per_second", "Samples per second", "samples/s", 2],
    ["steps_per_second", "Optimizer steps per second", "steps/s", 3],
    ["total_tokens", "Tokens to train", "tokens", 0],
    ["total_training_time_hours", "Training time", "hours", 2],
    ["static_shared_memory", "Static memory", "GiB", 2],
    ["estimated_system_ram_required", "System RAM required", "GiB", 1],
    ["offloaded_memory", "Offloaded", "GiB", 2],
    ["estimated_power_draw", "Power draw", "W", 0],
  ];

  function showResult(result, body, kind) {
    $("error").hidden = true;
    const capacity = capacityGiB(result, body);
    const status = $("memory-status");
    status.textContent = String(result.memory_status || "").replace("_", " ");
    status.className = "status status-" + result.memory_status;
    $("vram-usage").textContent = fmt(result.vram_usage, 2);
    $("vram-capacity").textContent = fmt(capacity, 1);
    $("vram-percentage").textContent = fmt(result.actual_vram_percentage, 1);
    const details = result.memory_details || {};
    drawChart(details, capacity);
    const total = Object.values(details).reduce((s, v) => s + (typeof v === "number" ? v : 0), 0) || 1;
    fillTable($("memory-table").tBodies[0], Object.entries(details).map(([label, v]) =>
      [label, fmt(v, 2), fmt(100 * v / total, 1)]));
    const figures = kind === "inference" ? INFERENCE_FIGURES : FINETUNING_FIGURES;
    const rows = figures.filter(([key]) => result[key] !== undefined && result[key] !== null)
      .map(([key, label, unit, digits]) => [label, fmt(result[key], digits) + " " + unit]);
    if (Array.isArray(result.active_optimizations) && result.active_optimizations.length) {
      rows.push(["Active optimizations", result.active_optimizations.join(", ")]);
    }
    fillTable($("performance").tBodies[0], rows);
    const notes = $("notes");
    notes.textContent = "";
    ["warnings", "assumptions"].forEach((key) => (result[key] || []).forEach((note) => {
      const li = document.createElement("li");
      li.className = key;
      li.textContent = typeof note === "string" ? note : JSON.stringify(note);
      notes.appendChild(li);
    }));
    $("request-json").textContent = JSON.stringify(body, null, 2);
    $("response-json").textContent = JSON.stringify(result, null, 2);
    $("results").hidden = false;
  }

  form.addEventListener("change", (ev) => {
    if (ev.target.name === "mode") syncMode();
    if (ev.target.id === "gpu_key") syncCustomGpu();
  });

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const kind = mode();
    const body = requestBody();
    const button = $("calculate");
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    call(kind, body).then(({ ok, status, data }) => {
      if (ok) showResult(data, body, kind);
      else showError(data, status);
    }).catch((err) => showError({ message: "network error: " + err }, 0))
      .finally(() => { button.disabled = false; form.removeAttribute("aria-busy"); });
  });

  function loadLists() {
    return Promise.all([call("gpus"), call("llms")]).then(([g, m]) => {
      if (!g.ok) return showError(g.data, g.status);
      if (!m.ok) return showError(m.data, m.status);
      gpus = g.data;
      fillSelect($("gpu_key"), gpus, (x) => x.key,
                 (x) => x.label + (x.memory ? " — " + fmt(x.memory, 0) + " GiB" : ""), "rtx_4090");
      fillSelect($("llm_key"), m.data, (x) => x.key,
                 (x) => x.name + (x.params_b ? " (" + fmt(x.params_b, 1) + "B)" : ""), "llama-3-8b-instruct");
      $("error").hidden = true;
      syncCustomGpu();
      form.dataset.ready = "true";
    }).catch((err) => showError({ message: "could not load the GPU and model lists: " + err }, 0));
  }

  syncMode();
  if (pageSession) loadLists();
  else $("api_token").addEventListener("change", loadLists);
})();
