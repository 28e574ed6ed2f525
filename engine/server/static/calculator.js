// vramplan page: the estimate, the planner and the fit map over the same API any client uses.
// The form is generated from the API's request schemas (each control carries its field and default), so the
// page sends only what differs from the defaults and the API applies the rest. No dependencies; works offline.
// Calls the API with this page's session (HttpOnly cookie + X-Vramplan-Page header), so visitors never
// paste a token.
"use strict";

(function () {
  const form = document.getElementById("calc-form");
  const api = form.dataset.api;
  const $ = (id) => document.getElementById(id);
  const charts = window.VramplanCharts;
  const fmt = charts.fmt;
  const gib = charts.gib;
  const pageSession = form.dataset.pageSession === "true";
  const STATUS_WORDS = { okay: "fits comfortably", moderate: "fits", high: "tight fit", very_high: "very tight fit",
                         insufficient: "does not fit", error: "configuration error" };
  let gpus = [];
  let models = [];
  let last = null; // { kind, body, result }

  // -- calling the API ---------------------------------------------------------------------------
  function call(path, body, accept) {
    const headers = { "Accept": accept || "application/json" };
    if (pageSession) headers["X-Vramplan-Page"] = "1";
    else headers["Authorization"] = "Bearer " + $("api_token").value.trim();
    const init = { credentials: "same-origin", headers: headers };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(api + "/" + path, init).then((resp) => {
      if (accept && accept !== "application/json" && resp.ok) {
        return resp.text().then((text) => ({ ok: true, status: resp.status, data: text }));
      }
      return resp.json().catch(() => ({})).then((data) => ({ ok: resp.ok, status: resp.status, data }));
    });
  }

  // -- errors: one summary, each bad field highlighted once beside its control ---------------------
  function clearErrors() {
    $("error").hidden = true;
    $("error").textContent = "";
    form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    form.querySelectorAll(".field-error").forEach((el) => el.remove());
  }

  function controlFor(field) {
    const name = String(field || "").replace(/\[\d+\]$/, "");
    return Array.from(form.querySelectorAll("[data-field]")).find((el) =>
      el.dataset.field === name && !el.disabled && !el.closest("[hidden]"));
  }

  function showError(data, status) {
    clearErrors();
    const box = $("error");
    const errors = (data && data.errors) || [];
    const unplaced = [];
    errors.forEach((e) => {
      const text = e.message + (e.closest && e.closest.length ? " (closest: " + e.closest.join(", ") + ")" : "");
      const control = controlFor(e.field);
      if (control) {
        const label = control.closest("label") || control.parentElement;
        label.classList.add("invalid");
        control.setAttribute("aria-invalid", "true");
        const msg = document.createElement("span");
        msg.className = "field-error";
        msg.textContent = text;
        label.appendChild(msg);
      } else {
        unplaced.push((e.field ? e.field + ": " : "") + text);
      }
    });
    let message;
    if (errors.length) {
      const placed = errors.length - unplaced.length;
      message = placed ? (placed === 1 ? "One field needs a change: it is highlighted." :
                          placed + " fields need a change: they are highlighted.") : "The request was refused.";
    } else {
      message = (data && data.message) || ("request failed (HTTP " + status + ")");
    }
    if (status === 401) message += pageSession ? " Reload the page to start a new session." : " Check the API token above.";
    box.appendChild(document.createTextNode(message));
    if (unplaced.length) {
      const list = document.createElement("ul");
      unplaced.forEach((t) => { const li = document.createElement("li"); li.textContent = t; list.appendChild(li); });
      box.appendChild(list);
    }
    box.hidden = false;
  }

  // -- the form ------------------------------------------------------------------------------------
  function mode() {
    return form.querySelector("input[name=mode]:checked").value;
  }

  function syncMode() {
    const m = mode();
    document.querySelectorAll("[data-mode]").forEach((el) => {
      const on = el.dataset.mode === m || el.dataset.mode === "both";
      el.hidden = !on;
      el.querySelectorAll("input, select").forEach((c) => { if (c.name !== "mode") c.disabled = !on; });
    });
  }

  function controls() {
    return Array.from(form.querySelectorAll("[data-field]")).filter((el) => !el.disabled);
  }

  function typed(el) {
    if (el.dataset.type === "boolean") return el.checked;
    if (el.value.trim() === "") return null;
    if (el.dataset.type === "integer" || el.dataset.type === "number") return Number(el.value);
    if (el.dataset.type === "json") {
      // a JSON object (runtime_settings); text that is not one goes as typed, for the API to name the field
      try { return JSON.parse(el.value); } catch (e) { return el.value; }
    }
    return el.value;
  }

  function defaultOf(el) {
    try { return JSON.parse(el.dataset.default || "null"); } catch (e) { return null; }
  }

  // The request body: what differs from the schema's defaults, plus the model and the GPU.
  function requestBody() {
    const body = {};
    controls().forEach((el) => {
      const value = typed(el);
      const field = el.dataset.field;
      if (value === null) return;
      if (field !== "gpu_key" && field !== "llm_key" && value === defaultOf(el)) return;
      setPath(body, field, value);
    });
    return body;
  }

  function setPath(obj, path, value) {
    const parts = path.split(".");
    let o = obj;
    parts.slice(0, -1).forEach((p) => { o[p] = o[p] || {}; o = o[p]; });
    o[parts[parts.length - 1]] = value;
  }

  // Set request fields on the form (a suggestion's change, a fit-map cell, a planner answer).
  function applyFields(fields, prefix) {
    Object.entries(fields).forEach(([key, value]) => {
      const name = prefix ? prefix + "." + key : key;
      const json = controls().find((c) => c.dataset.field === name && c.dataset.type === "json");
      if (json) { json.value = value === null ? "" : JSON.stringify(value); return; }  // a change replaces the object
      if (value && typeof value === "object" && !Array.isArray(value)) return applyFields(value, name);
      const el = controls().find((c) => c.dataset.field === name);
      if (!el) return;
      if (el.dataset.type === "boolean") el.checked = Boolean(value);
      else el.value = value === null ? "" : String(value);
    });
  }

  function resetForm() {
    controls().forEach((el) => {
      if (el.dataset.field === "gpu_key" || el.dataset.field === "llm_key") return;
      const d = defaultOf(el);
      if (el.dataset.type === "boolean") el.checked = Boolean(d);
      else el.value = d === null ? "" : String(d);
    });
    clearErrors();
  }

  // -- the estimate --------------------------------------------------------------------------------
  function capacityGiB(result, body) {
    if (body.custom_vram) return body.custom_vram;
    const gpu = gpus.find((g) => g.key === body.gpu_key);
    if (gpu && gpu.memory) return gpu.memory;
    const pct = result.actual_vram_percentage || result.vram_percentage;
    return pct ? result.vram_usage * 100 / pct : result.vram_usage;
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
    ["per_user_tps", "Decode speed per user", "tokens/s", 1],
    ["estimated_throughput_tps", "Throughput, all users", "tokens/s", 1],
    ["estimated_latency_tps", "Decode speed, one sequence", "tokens/s", 1],
    ["ms_per_token", "Time per output token", "ms", 2],
    ["tftt", "Time to first token", "ms", 0],
    ["static_shared_memory", "Shared by all users", "GiB", 2],
    ["per_user_memory", "Added per user", "GiB", 2],
    ["estimated_system_ram_required", "Host RAM required", "GiB", 1],
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
    ["estimated_system_ram_required", "Host RAM required", "GiB", 1],
    ["offloaded_memory", "Offloaded", "GiB", 2],
    ["estimated_power_draw", "Power draw", "W", 0],
  ];
  // Known members of a `serving` object (issue 11); any other member is shown by its name.
  const SERVING_LABELS = {
    input_tokens: ["Prompt tokens per request", ""], output_tokens: ["Output tokens per request", ""],
    load: ["Load model", ""], running_sequences: ["Sequences running", ""], queued_requests: ["Requests queued", ""],
    output_throughput_tps: ["Output throughput", "tokens/s"], total_throughput_tps: ["Total throughput", "tokens/s"],
    requests_per_second: ["Requests per second", "req/s"], ttft_ms: ["Time to first token", "ms"],
    itl_ms: ["Time between tokens", "ms"], e2e_latency_ms: ["End-to-end latency", "ms"],
    utilisation: ["Utilisation", ""], limited_by: ["Limited by", ""],
    cost_per_hour: ["Cost per hour", ""], cost_per_million_output_tokens: ["Cost per million output tokens", ""],
  };

  function modelName(body) {
    const m = models.find((x) => x.key === body.llm_key);
    return m ? m.name : body.llm_key;
  }

  function gpuLabel(key) {
    const g = gpus.find((x) => x.key === key);
    return g ? g.label : key;
  }

  function showResult(result, body, kind) {
    clearErrors();
    last = { kind: kind, body: body, result: result };
    const capacity = capacityGiB(result, body);
    const status = $("memory-status");
    status.textContent = STATUS_WORDS[result.memory_status] || result.memory_status;
    status.className = "status status-" + result.memory_status;
    status.dataset.status = result.memory_status;
    $("verdict").className = "panel verdict verdict-" + result.memory_status;
    $("verdict-title").textContent = modelName(body) + " on " + (body.num_gpus || 1) + " × " + gpuLabel(body.gpu_key) +
      (result.runtime ? " · " + result.runtime : "") + " · " + (kind === "inference" ? "inference" : "fine-tuning");
    $("vram-usage").textContent = gib(result.vram_usage);
    $("vram-capacity").textContent = fmt(capacity, 1);
    $("vram-percentage").textContent = fmt(result.actual_vram_percentage, 1);
    const details = result.memory_details || {};
    charts.stackedBar($("memory-chart"), $("chart-legend"), details, capacity);
    const total = Object.values(details).reduce((s, v) => s + (typeof v === "number" ? v : 0), 0) || 1;
    fillTable($("memory-table").tBodies[0], Object.entries(details).map(([label, v]) =>
      [label, gib(v), (100 * v / total).toFixed(1)]));
    const perGpu = result.per_gpu || [];
    $("per-gpu").hidden = $("per-gpu-title").hidden = !perGpu.length;
    fillTable($("per-gpu").tBodies[0], perGpu.map((g) => ["GPU " + g.gpu, g.layers === undefined ? "" : String(g.layers),
                                                         gib(g.vram_usage)]));
    const figures = kind === "inference" ? INFERENCE_FIGURES : FINETUNING_FIGURES;
    const rows = figures.filter(([key]) => result[key] !== undefined && result[key] !== null)
      .map(([key, label, unit, digits]) => [label, (unit === "GiB" ? gib(result[key]) : fmt(result[key], digits)) + " " + unit]);
    if (result.offload) {
      const o = result.offload;
      rows.push(["Layers on the GPU / host", (o.of_layers - o.layers) + " / " + o.layers +
                 (o.target === "nvme" ? " (NVMe)" : " (CPU RAM)")]);
    }
    if (Array.isArray(result.active_optimizations) && result.active_optimizations.length) {
      rows.push(["Active optimizations", result.active_optimizations.join(", ")]);
    }
    fillTable($("performance").tBodies[0], rows);
    showServing(result.serving);
    showSuggestions(result.suggestions);
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
    $("empty-estimate").hidden = true;
    $("results").hidden = false;
    loadCurve(body, kind);
  }

  function showServing(serving) {
    const panel = $("serving-panel");
    panel.hidden = !serving || typeof serving !== "object";
    if (panel.hidden) return;
    const rows = Object.entries(serving).map(([key, value]) => {
      const [label, unit] = SERVING_LABELS[key] || [key.replace(/_/g, " "), ""];
      if (key === "load") value = { closed_loop: "closed loop (clients wait for each answer)",
                                    open_loop: "open loop (requests arrive at random)",
                                    static_batch: "one static batch" }[value] || value;
      let text = value === null ? "—" : typeof value === "number" ?
        (key === "utilisation" ? fmt(100 * value, 0) + " %" :
         fmt(value, value !== 0 && Math.abs(value) < 1 ? 3 : 2) + (unit ? " " + unit : "")) : String(value);
      return [label, text];
    });
    const half = Math.ceil(rows.length / 2);  // two columns side by side
    const bodies = $("serving").querySelectorAll("tbody");
    fillTable(bodies[0], rows.slice(0, half));
    fillTable(bodies[1], rows.slice(half));
  }

  function costText(cost) {
    const parts = [];
    const c = cost || {};
    if (c.quality_rank && c.quality_rank.before !== c.quality_rank.after) {
      parts.push("quality " + fmt(c.quality_rank.before, 0) + " → " + fmt(c.quality_rank.after, 0));
    }
    if (c.speed && c.speed.before !== c.speed.after) {
      parts.push((c.speed.field === "training_tps" ? "training " : "decode ") + fmt(c.speed.before, 1) + " → " +
                 fmt(c.speed.after, 1) + " tokens/s");
    }
    if (c.workload) parts.push(c.workload.field.replace(/_/g, " ") + " " + fmt(c.workload.before, 0) + " → " + fmt(c.workload.after, 0));
    if (c.gpus && c.gpus.before !== c.gpus.after) parts.push("GPUs " + c.gpus.before + " → " + c.gpus.after);
    if (c.gpu_memory_gib) parts.push("GPU memory " + fmt(c.gpu_memory_gib.before, 0) + " → " + fmt(c.gpu_memory_gib.after, 0) + " GiB");
    return parts.join(" · ");
  }

  function showSuggestions(list) {
    const panel = $("suggestions");
    const ol = $("suggestion-list");
    ol.textContent = "";
    panel.hidden = !Array.isArray(list);
    if (panel.hidden) return;
    const title = panel.querySelector("h2");
    title.textContent = last && last.result.memory_status === "very_high" ? "How to leave some headroom" : "What would make it fit";
    if (!list.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "No change within one node (8 GPUs) makes this fit.";
      ol.appendChild(li);
      return;
    }
    list.forEach((s, i) => {
      const li = document.createElement("li");
      li.className = "suggestion";
      li.dataset.change = JSON.stringify(s.change);
      const head = document.createElement("div");
      head.className = "suggestion-head";
      const what = document.createElement("strong");
      what.textContent = s.summary.charAt(0).toUpperCase() + s.summary.slice(1);
      const result = document.createElement("span");
      result.className = "pill status-" + s.memory_status;
      result.textContent = gib(s.vram_usage) + " GiB · " + (STATUS_WORDS[s.memory_status] || s.memory_status);
      head.appendChild(what);
      head.appendChild(result);
      const meta = document.createElement("div");
      meta.className = "suggestion-meta";
      meta.textContent = costText(s.cost);
      const fields = document.createElement("code");
      fields.className = "change";
      fields.textContent = Object.entries(s.change).map(([k, v]) => k + ": " + JSON.stringify(v)).join(", ");
      const keeps = document.createElement("div");
      keeps.className = "keeps";
      const bar = document.createElement("span");
      bar.className = "keeps-bar";
      const fill = document.createElement("span");
      fill.style.width = Math.round(100 * s.keeps) + "%";
      bar.appendChild(fill);
      keeps.appendChild(bar);
      keeps.appendChild(document.createTextNode("keeps " + Math.round(100 * s.keeps) + " %"));
      const apply = document.createElement("button");
      apply.type = "button";
      apply.className = "apply";
      apply.textContent = "Apply";
      apply.addEventListener("click", () => { applyFields(s.change); calculate(); });
      li.appendChild(head);
      li.appendChild(meta);
      const foot = document.createElement("div");
      foot.className = "suggestion-foot";
      keeps.insertBefore(fields, keeps.firstChild);
      foot.appendChild(keeps);
      foot.appendChild(apply);
      li.appendChild(foot);
      ol.appendChild(li);
      if (i === 0) li.classList.add("best");
    });
  }

  function loadCurve(body, kind) {
    $("curve-note").textContent = "…";
    $("context-chart").textContent = "";
    call("context-curve", Object.assign({ workload: kind }, body)).then(({ ok, data }) => {
      if (!ok || !last || last.body !== body) return;
      const note = String(data.note || "");
      $("curve-note").textContent = note.charAt(0).toUpperCase() + note.slice(1) + ".";
      charts.contextChart($("context-chart"), data);
    }).catch(() => { $("curve-note").textContent = "could not draw the curve"; });
  }

  function calculate() {
    const kind = mode();
    const body = requestBody();
    const button = $("calculate");
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    showView("estimate");
    return call(kind, body).then(({ ok, status, data }) => {
      if (ok) showResult(data, body, kind);
      else showError(data, status);
    }).catch((err) => showError({ message: "network error: " + err }, 0))
      .finally(() => { button.disabled = false; form.removeAttribute("aria-busy"); });
  }

  // -- reports ---------------------------------------------------------------------------------------
  function download(format) {
    if (!last) return;
    const accept = format === "html" ? "text/html" : "text/markdown";
    call("report?workload=" + last.kind + "&format=" + format, last.body, accept).then(({ ok, status, data }) => {
      if (!ok) return showError(data, status);
      const blob = new Blob([data], { type: accept + ";charset=utf-8" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = "vramplan-" + last.body.llm_key + "-" + last.body.gpu_key + (format === "html" ? ".html" : ".md");
      a.dataset.size = String(blob.size);
      a.id = "report-link";
      a.hidden = true;
      const old = $("report-link");
      if (old) old.remove();
      document.body.appendChild(a);
      a.click();
    });
  }

  // -- views -----------------------------------------------------------------------------------------
  function showView(name) {
    ["estimate", "planner", "fitmap", "deploy"].forEach((v) => {
      $("view-" + v).hidden = v !== name;
      $("tab-" + v).setAttribute("aria-selected", v === name ? "true" : "false");
    });
  }

  // -- the planner -------------------------------------------------------------------------------------
  const QUESTION_WORDS = { max_seq_length: "Largest context", max_batch_size: "Largest batch",
                           max_concurrent_users: "Most concurrent users", min_num_gpus: "Fewest GPUs",
                           best_quantization: "Best quantization", gpus: "GPUs that fit" };
  const QUESTION_FIELD = { max_seq_length: "seq_length", max_batch_size: "batch_size",
                           max_concurrent_users: "concurrent_users", min_num_gpus: "num_gpus",
                           best_quantization: null };

  function runPlan() {
    const kind = mode();
    const find = Array.from($("plan-questions").querySelectorAll("input:checked"))
      .filter((c) => !c.closest("[hidden]")).map((c) => c.value);
    if (!find.length) return;
    const body = Object.assign(requestBody(), { workload: kind, find: find, headroom: Number($("plan-headroom").value) });
    $("plan-run").disabled = true;
    call("plan", body).then(({ ok, status, data }) => {
      if (!ok) return showError(data, status);
      clearErrors();
      showPlan(data, body, kind);
    }).catch((err) => showError({ message: "network error: " + err }, 0))
      .finally(() => { $("plan-run").disabled = false; });
  }

  function showPlan(answers, body, kind) {
    const tbody = $("plan-table").tBodies[0];
    tbody.textContent = "";
    Object.entries(answers).forEach(([q, a]) => {
      if (q === "gpus") return;
      const tr = document.createElement("tr");
      tr.dataset.question = q;
      const cells = [QUESTION_WORDS[q] || q];
      if (a.value === null) {
        cells.push(a.reason, "", "");
      } else {
        const e = a.estimate;
        let value = q === "best_quantization" ? a.value + " · quality " + a.quality_rank : fmt(a.value, 0);
        if (q === "max_seq_length") value += " tokens";
        if (a.limited_by) value += " · " + a.limited_by.replace(/ \(.*\)$/, "") + " allows no more";
        cells.push(value, gib(e.vram_usage), STATUS_WORDS[e.memory_status] || e.memory_status);
      }
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (i === 2) td.className = "num";
        if (i === 1 && a.value === null) td.className = "muted";
        tr.appendChild(td);
      });
      const open = document.createElement("td");
      if (a.value !== null) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "link";
        b.textContent = "Open";
        const field = q === "best_quantization" ? (kind === "inference" ? "quantization" : "fine_tuning_quantization")
          : QUESTION_FIELD[q];
        b.addEventListener("click", () => { applyFields({ [field]: a.value }); calculate(); });
        open.appendChild(b);
      }
      tr.appendChild(open);
      tbody.appendChild(tr);
    });
    const g = answers.gpus;
    const table = $("plan-gpus");
    $("plan-gpus-title").hidden = table.hidden = !g;
    const gb = table.tBodies[0];
    gb.textContent = "";
    if (g) {
      const speed = kind === "inference" ? "per_user_tps" : "training_tps";
      $("plan-gpus-speed").textContent = kind === "inference" ? "decode tokens/s" : "training tokens/s";
      if (g.value === null) {
        const tr = document.createElement("tr");
        const td = document.createElement("td");
        td.colSpan = 5;
        td.textContent = g.reason;
        tr.appendChild(td);
        gb.appendChild(tr);
      }
      const SHOWN = 12;
      (g.value || []).forEach((row, i) => {
        const tr = document.createElement("tr");
        tr.className = "clickable" + (i >= SHOWN ? " extra" : "");
        tr.hidden = i >= SHOWN;
        tr.dataset.gpu = row.gpu_key;
        const gpu = gpus.find((x) => x.key === row.gpu_key) || {};
        [gpu.label || row.gpu_key, fmt(gpu.memory, 0) + " GiB", gib(row.vram_usage),
         STATUS_WORDS[row.memory_status], fmt(row[speed], 1)].forEach((c, i) => {
          const td = document.createElement("td");
          td.textContent = c;
          if (i === 1 || i === 2 || i === 4) td.className = "num";
          tr.appendChild(td);
        });
        tr.addEventListener("click", () => { applyFields({ gpu_key: row.gpu_key }); calculate(); });
        gb.appendChild(tr);
      });
      const more = (g.value || []).length - SHOWN;
      if (more > 0) {
        const tr = document.createElement("tr");
        const td = document.createElement("td");
        td.colSpan = 5;
        const b = document.createElement("button");
        b.type = "button";
        b.className = "link";
        b.id = "plan-gpus-more";
        b.textContent = "Show " + more + " more (" + g.value.length + " of " + g.considered + " GPUs fit)";
        b.addEventListener("click", () => { gb.querySelectorAll("tr.extra").forEach((r) => { r.hidden = false; }); tr.remove(); });
        td.appendChild(b);
        tr.appendChild(td);
        gb.appendChild(tr);
      }
    }
    $("plan-results").hidden = false;
  }

  // -- the fit map -------------------------------------------------------------------------------------
  const CATEGORY_WORDS = { consumer: "Consumer", workstation: "Workstation", datacenter: "Data centre",
                           apple: "Apple silicon", edge: "Edge", other: "Other" };
  let fitmap = null;
  const hiddenCategories = new Set(["edge"]);

  function runFitMap() {
    const kind = mode();
    const body = requestBody();
    delete body.gpu_key;
    const req = Object.assign({ workload: kind }, body);
    if (kind === "inference" && $("fitmap-formats").value === "common" && !body.runtime) {
      const options = Array.from($("quantization").options).map((o) => o.value);
      req.quantizations = form.dataset.mapFormats.split(",").filter((k) => k && options.includes(k));
    }
    $("fitmap-run").disabled = true;
    $("fitmap-status").textContent = "estimating every GPU…";
    const started = performance.now();
    call("fit-map", req).then(({ ok, status, data }) => {
      if (!ok) { $("fitmap-status").textContent = ""; return showError(data, status); }
      clearErrors();
      fitmap = { data: data, body: body, kind: kind };
      drawFitMap();
      const cells = data.rows.length * data.columns.length;
      $("fitmap-status").textContent = fmt(cells, 0) + " estimates in " + fmt((performance.now() - started) / 1000, 1) + " s.";
    }).catch((err) => showError({ message: "network error: " + err }, 0))
      .finally(() => { $("fitmap-run").disabled = false; });
  }

  function drawChips(categories) {
    const box = $("fitmap-categories");
    box.textContent = "";
    categories.forEach((c) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "chip" + (hiddenCategories.has(c) ? "" : " on");
      b.dataset.category = c;
      b.textContent = CATEGORY_WORDS[c] || c;
      b.addEventListener("click", () => {
        if (hiddenCategories.has(c)) hiddenCategories.delete(c); else hiddenCategories.add(c);
        drawFitMap();
      });
      box.appendChild(b);
    });
  }

  function drawFitMap() {
    const { data, body, kind } = fitmap;
    const table = $("fitmap");
    table.textContent = "";
    const order = ["consumer", "workstation", "datacenter", "apple", "edge"];
    const categories = Array.from(new Set(data.rows.map((r) => r.category || "other")))
      .sort((a, b) => (order.indexOf(a) + 99) % 99 - (order.indexOf(b) + 99) % 99);
    drawChips(categories);
    $("fitmap-title").textContent = modelName(body) + " · " + (kind === "inference" ? "inference" : "fine-tuning") + " · " +
      fmt(body.seq_length || 2048, 0) + " tokens · batch " + (body.batch_size || 1) +
      (body.num_gpus > 1 ? " · " + body.num_gpus + " GPUs each" : "");
    const thead = document.createElement("thead");
    const hr = document.createElement("tr");
    const corner = document.createElement("th");
    corner.textContent = "GPU";
    corner.className = "gpu-col";
    hr.appendChild(corner);
    data.columns.forEach((c) => {
      const th = document.createElement("th");
      th.textContent = c.label.replace(/^GGUF /, "");
      if (c.quality_rank !== undefined) {
        const q = document.createElement("span");
        q.className = "q";
        q.textContent = "q " + c.quality_rank;
        th.appendChild(q);
      }
      th.title = c.quality_rank !== undefined ? c.key + " · quality rank " + c.quality_rank : c.key;
      th.className = "format-col";
      hr.appendChild(th);
    });
    thead.appendChild(hr);
    table.appendChild(thead);
    const tbody = document.createElement("tbody");
    categories.filter((c) => !hiddenCategories.has(c)).forEach((cat) => {
      const rows = data.rows.filter((r) => (r.category || "other") === cat)
        .sort((a, b) => (a.memory_gib || 0) - (b.memory_gib || 0) || a.label.localeCompare(b.label));
      const gr = document.createElement("tr");
      gr.className = "group";
      const gh = document.createElement("th");
      gh.colSpan = data.columns.length + 1;
      gh.textContent = CATEGORY_WORDS[cat] || cat;
      gr.appendChild(gh);
      tbody.appendChild(gr);
      rows.forEach((row) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.className = "gpu-col";
        th.textContent = row.label.replace(/^NVIDIA (GeForce )?|^AMD (Radeon )?|^Intel /, "").replace(/ \(.*\)$/, "");
        th.title = row.label;
        const mem = document.createElement("span");
        mem.className = "mem";
        mem.textContent = fmt(row.memory_gib, 0) + " GiB";
        th.appendChild(mem);
        tr.appendChild(th);
        row.cells.forEach((cell, i) => {
          const td = document.createElement("td");
          const col = data.columns[i];
          td.className = "cell fit-" + cell.memory_status;
          td.dataset.gpu = row.gpu_key;
          td.dataset.value = col.key;
          td.dataset.field = col.field;
          td.dataset.status = cell.memory_status;
          td.tabIndex = 0;
          if (cell.error) {
            td.textContent = "—";
            td.title = cell.error;
          } else {
            const speed = cell[data.speed_field];
            td.textContent = cell.fits ? fmt(speed, speed < 10 ? 1 : 0) : fmt(cell.vram_usage, 0) + " GiB";
            td.title = row.label + " · " + col.label + ": " + gib(cell.vram_usage) + " GiB (" +
              fmt(cell.actual_vram_percentage, 0) + " %), " + (STATUS_WORDS[cell.memory_status] || cell.memory_status) +
              (cell.fits ? ", " + fmt(speed, 1) + (kind === "inference" ? " tokens/s per user" : " training tokens/s") : "") +
              (cell.runtime ? " · " + cell.runtime : "");
          }
          const open = () => {
            const change = { gpu_key: row.gpu_key };
            change[col.field] = col.key;
            applyFields(change);
            calculate();
          };
          td.addEventListener("click", open);
          td.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      });
    });
    table.appendChild(tbody);
    $("fitmap-wrap").hidden = false;
  }

  // -- wiring ------------------------------------------------------------------------------------------
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

  form.addEventListener("change", (ev) => {
    if (ev.target.name === "mode") {
      syncMode();
      $("plan-results").hidden = true;
    }
  });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); calculate(); });
  $("reset-form").addEventListener("click", resetForm);
  $("report-html").addEventListener("click", () => download("html"));
  $("report-markdown").addEventListener("click", () => download("markdown"));
  $("plan-run").addEventListener("click", runPlan);
  $("fitmap-run").addEventListener("click", runFitMap);
  document.querySelectorAll(".views [role=tab]").forEach((tab) => tab.addEventListener("click", () => {
    showView(tab.dataset.view);
    if (tab.dataset.view === "fitmap" && !fitmap && form.dataset.ready === "true") runFitMap();
  }));

  function loadLists() {
    return Promise.all([call("gpus"), call("llms")]).then(([g, m]) => {
      if (!g.ok) return showError(g.data, g.status);
      if (!m.ok) return showError(m.data, m.status);
      gpus = g.data;
      models = m.data;
      fillSelect($("gpu_key"), gpus, (x) => x.key,
                 (x) => x.label + (x.memory ? " — " + fmt(x.memory, 0) + " GiB" : ""), "rtx_4090");
      fillSelect($("llm_key"), models, (x) => x.key,
                 (x) => x.name + (x.params_b ? " (" + fmt(x.params_b, 1) + "B)" : ""), "llama-3-8b-instruct");
      clearErrors();
      form.dataset.ready = "true";
    }).catch((err) => showError({ message: "could not load the GPU and model lists: " + err }, 0));
  }

  syncMode();
  if (pageSession) loadLists();
  else $("api_token").addEventListener("change", loadLists);
})();
