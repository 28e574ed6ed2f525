// vramplan page: the "cheapest deployment" form. Posts a plan request with find ["cheapest_deployment"]
// and draws the ranked table. Self-contained: it reads the page's API prefix and how the calculator
// form authenticates (page session or pasted token), and shares nothing else with calculator.js.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("deploy-form");
  const calc = $("calc-form");
  if (!form || !calc) return;
  const api = calc.dataset.api;
  const pageSession = calc.dataset.pageSession === "true";

  function call(path, body) {
    const headers = { "Accept": "application/json" };
    if (pageSession) headers["X-Vramplan-Page"] = "1";
    else headers["Authorization"] = "Bearer " + ($("api_token") ? $("api_token").value.trim() : "");
    const init = { credentials: "same-origin", headers: headers };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(api + "/" + path, init).then((resp) =>
      resp.json().catch(() => ({})).then((data) => ({ ok: resp.ok, status: resp.status, data })));
  }

  function showError(message, errors) {
    const box = $("deploy-error");
    box.textContent = message;
    if (errors && errors.length) {
      const list = document.createElement("ul");
      errors.forEach((e) => {
        const li = document.createElement("li");
        li.textContent = (e.field ? e.field + ": " : "") + e.message +
          (e.closest && e.closest.length ? " (closest: " + e.closest.join(", ") + ")" : "");
        list.appendChild(li);
      });
      box.appendChild(list);
    }
    box.hidden = false;
  }

  function list(text) {
    return text.split(",").map((s) => s.trim()).filter((s) => s);
  }

  // The plan request: empty optional fields are left out, so the server's defaults apply.
  function planBody() {
    const body = { workload: "inference", find: ["cheapest_deployment"], llm_key: $("deploy-llm_key").value };
    ["input_tokens", "output_tokens", "max_deployments", "min_quality_rank"].forEach((name) => {
      const v = $("deploy-" + name).value;
      if (v !== "") body[name] = Number(v);
    });
    const amount = $("deploy-load-value").value;
    if (amount !== "") body[$("deploy-load").value] = Number(amount);
    const slo = {};
    ["ttft_ms", "itl_ms", "e2e_latency_ms"].forEach((name) => {
      const v = $("deploy-" + name).value;
      if (v !== "") slo[name] = Number(v);
    });
    if (Object.keys(slo).length) body.slo = slo;
    const runtimes = list($("deploy-runtimes").value);
    if (runtimes.length) body.runtimes = runtimes;
    const prices = list($("deploy-gpu_hour_costs").value);
    if (prices.length) {
      body.gpu_hour_costs = {};
      prices.forEach((item) => {
        const [key, price] = item.split("=");
        body.gpu_hour_costs[(key || "").trim()] = Number(price);
      });
    }
    return body;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "–";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  function cell(row, text, numeric) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "num";
    row.appendChild(td);
    return td;
  }

  function render(answer) {
    const tbody = $("deploy-table").querySelector("tbody");
    tbody.textContent = "";
    const rows = answer.value || [];
    rows.forEach((r, i) => {
      const tr = document.createElement("tr");
      if (i === 0) tr.className = "best";
      cell(tr, String(i + 1), true);
      cell(tr, r.gpu_key);
      cell(tr, String(r.num_gpus), true);
      cell(tr, r.num_gpus > 1 ? r.inference_parallelism : "—");  // one GPU: nothing is split
      cell(tr, r.quantization);
      cell(tr, r.kv_cache_quantization);
      cell(tr, r.runtime);
      cell(tr, String(r.replicas), true);
      cell(tr, "request_rate" in r ? fmt(r.request_rate, 3) + " req/s" : r.concurrent_users + " users", true);
      cell(tr, fmt(r.ttft_ms, 0), true);
      cell(tr, fmt(r.itl_ms, 1), true);
      cell(tr, fmt(r.utilisation * 100, 0) + " %", true);
      const cost = cell(tr, r.cost_per_hour === null ? "no price" : fmt(r.cost_per_hour, 2), true);
      if (r.price && r.price.kind === "reference") cost.title = "reference list price " + r.price.offer + ", " + r.price.date + " (not a quote)";
      cell(tr, fmt(r.cost_per_million_output_tokens, 3), true);
      cell(tr, r.binding ? r.binding + (r.binding_step ? " (at " + r.binding_step + ")" : "") : "–");
      tbody.appendChild(tr);
    });
    $("deploy-summary").textContent = rows.length + " GPU types, best first: " +
      Number(answer.considered).toLocaleString("en-US") + " configurations considered, " +
      Number(answer.evaluations).toLocaleString("en-US") + " estimates.";
    const refs = rows.filter((r) => r.price && r.price.kind === "reference").map((r) => r.gpu_key);
    const notes = $("deploy-notes");
    notes.textContent = refs.length
      ? "Reference list prices (USD, read on their date; not quotes) for " + refs.join(", ") + "."
      : "";
    (answer.notes || []).forEach((n) => {  // what the answer says of its rows: how a runtime is launched, what was left out
      const line = document.createElement("span");
      line.className = "deploy-note";
      line.textContent = "Note: " + n;
      notes.appendChild(document.createElement("br"));
      notes.appendChild(line);
    });
    $("deploy-results").hidden = false;
  }

  function loadModels() {
    call("llms").then((res) => {
      if (!res.ok) return;
      const select = $("deploy-llm_key");
      select.textContent = "";
      res.data.forEach((m) => {
        const opt = document.createElement("option");
        opt.value = m.key;
        opt.textContent = m.name || m.key;
        select.appendChild(opt);
      });
      if (res.data.some((m) => m.key === "llama-3.3-70b-instruct")) select.value = "llama-3.3-70b-instruct";
    });
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("deploy-error").hidden = true;
    $("deploy-results").hidden = true;
    const button = $("deploy-submit");
    button.disabled = true;
    call("plan", planBody()).then((res) => {
      button.disabled = false;
      if (!res.ok) {
        showError((res.data && res.data.message) || ("request failed (HTTP " + res.status + ")"), res.data && res.data.errors);
        return;
      }
      const answer = res.data.cheapest_deployment;
      if (!answer || answer.value === null) {
        showError("No deployment meets it: " + (answer ? answer.reason : "no answer"));
        return;
      }
      render(answer);
    }).catch((err) => {
      button.disabled = false;
      showError("request failed: " + err);
    });
  });

  if (pageSession) loadModels();
  else if ($("api_token")) $("api_token").addEventListener("change", loadModels);
})();
