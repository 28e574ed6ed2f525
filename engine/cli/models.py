"""``vramplan models list|import`` and ``vramplan gpus``: browse the catalogs, bring in a model file.

The main CLI attaches :data:`models` (a group) and :data:`gpus` (a command). Listing goes through
``vramplan.list_models()`` / ``vramplan.list_gpus()`` — the same lists ``GET llms`` / ``GET gpus``
return — imported when a command runs so that loading the CLI stays cheap. Bad input exits with
status 2 and one line (``click.UsageError``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from .. import families
from .. import follows as follows_mod
from ..errors import VramplanError
from ..resolve import params_disagree
from ..runtimetext import accepted_range
from ..units import GIB
from .common import LIST_FORMAT


# -- output helpers ---------------------------------------------------------------------------

def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A plain fixed-width table: ``columns`` is [(key, header)]; numbers align right."""
    cells = [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    numeric = [all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in rows) for k, _ in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line([h for _, h in columns]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def _listing(rows: list[dict], fmt: str, columns: list[tuple[str, str]], none: str) -> None:
    """A filtered listing: JSON (an empty list when nothing matches), else a table or the ``none`` line."""
    if fmt == "json":
        _json(rows)
    elif not rows:
        click.echo(none)
    else:
        click.echo(_table(rows, columns))


# -- models -----------------------------------------------------------------------------------

@click.group("models")
def models() -> None:
    """Browse the model catalog, or import a model from its files."""


@models.command("list")
@click.option("--family", help="only this family; a prefix matches too (qwen matches qwen2.5 and qwen3)")
@click.option("--min-params", type=click.FloatRange(min=0), help="at least this many billion parameters (total)")
@click.option("--max-params", type=click.FloatRange(min=0), help="at most this many billion parameters (total)")
@click.option("--capability", "capabilities", multiple=True, metavar="NAME",
              help="only models with this capability (repeatable, all required): instruct, moe, vision, "
                   "sliding_window, mla, reasoning, code, tools")
@click.option("--search", help="words that must all appear in the key, name, family or Hub repository (any case)")
@LIST_FORMAT
def list_models_cmd(family, min_params, max_params, capabilities, search, fmt) -> None:
    """List catalog models, filtered as GET llms filters them."""
    import vramplan

    filters = {"family": family, "min_params": min_params, "max_params": max_params,
               "capability": [c.strip() for v in capabilities for c in v.split(",") if c.strip()] or None,
               "search": search}
    try:
        rows = vramplan.list_models(**{k: v for k, v in filters.items() if v is not None})
    except vramplan.RequestError as exc:
        raise click.UsageError("; ".join(f"--{w.replace('_', '-')}: {m}" for w, m in exc.problems)) from None
    except VramplanError as exc:
        raise click.ClickException(exc.message) from None
    rows.sort(key=lambda m: (str(m.get("family", "")), m.get("params_b") or 0, str(m.get("key"))))
    _listing(rows, fmt, [("key", "key"), ("name", "name"), ("family", "family"), ("params_b", "params (B)"),
                         ("active_params_b", "active (B)"), ("context_length", "context")], "no models match")


@models.command("import")
@click.argument("path")
@click.option("--save-as", "save_as", help="write a catalog entry under this key (lowercase, e.g. my-llama-8b)")
@click.option("--catalog-dir", type=click.Path(file_okay=False, path_type=Path),
              help="where --save-as writes (default: the user catalog, <user data dir>/catalogs/models)")
@click.option("--name", "display_name", help="display name for --save-as (default: from the file)")
@click.option("--context-length", type=click.IntRange(min=1), help="context length when the file does not state one")
@click.option("--force", is_flag=True, help="replace an entry of the same key in that folder")
@LIST_FORMAT
def import_cmd(path, save_as, catalog_dir, display_name, context_length, force, fmt) -> None:
    """Read a config.json, .gguf, .safetensors or model.safetensors.index.json (or a folder with
    one), a GGUF by URL (header only), a Hub model hf:ORG/NAME[@REV] or a Hub GGUF
    hf:ORG/NAME/FILE.gguf[@REV], and show the architecture found and what one sequence keeps;
    with --save-as, add it to a user catalog."""
    from ..architecture import from_hf_config
    from ..configkeys import check_config
    from ..errors import RequestError
    from ..hub import read_model

    remote = path.startswith(("http://", "https://", "hf:"))
    if not remote:
        if not Path(path).exists():
            raise click.UsageError(f"{path}: no such file or folder (give a local path, an http(s) URL of a GGUF, "
                                   "or a Hub id hf:ORG/NAME)")
        path = Path(path)

    if save_as is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", save_as):
        raise click.UsageError(f"--save-as {save_as!r}: use lowercase letters, digits, '.', '_' and '-' "
                               "(starting with a letter or digit)")
    try:
        info = read_model(path)
    except VramplanError as exc:
        raise click.UsageError(exc.message) from None
    arch = None
    hostile = check_config(info["config"], str(path)) if isinstance(info["config"], dict) else []
    if hostile:  # wrong types or sizes no model has: refuse the file rather than describe it
        raise click.UsageError(RequestError(hostile).message)
    if info["config"]:
        try:
            arch = from_hf_config(info["config"], where=str(path))
        except VramplanError as exc:
            # An incomplete config cannot be estimated from: an error whether or not it is saved.
            raise click.UsageError(exc.message) from None
    summary = _summary(info, arch)
    if arch is not None:
        summary.update(_per_sequence(arch))
    if fmt == "json":
        _json(summary)
    else:
        click.echo(_summary_text(summary))
    if save_as is None:
        return
    if arch is None:
        raise click.UsageError(f"{path}: no architecture found (put the model's config.json "
                                             "beside the weights), so it cannot be saved to the catalog")
    written = _save_entry(save_as, info, arch, path, catalog_dir, display_name, context_length, force)
    click.echo(f"saved {save_as} to {written}", err=(fmt == "json"))


def _summary(info: dict, arch) -> dict:
    s: dict = {"name": info["name"], "kind": info["kind"], "quantization": info["quantization"],
               "params": info["params"], "weights_bytes": info["weights_bytes"],
               "weights_gib": round(info["weights_bytes"] / GIB, 2) if info["weights_bytes"] else None,
               "tensor_types": info["tensor_types"], "notes": list(info["notes"])}
    if arch is not None:
        s.update({
            "model_type": arch.model_type, "layers": arch.num_layers, "hidden_size": arch.hidden_size,
            "attention_heads": arch.num_heads, "kv_heads": arch.num_kv_heads, "head_dim": arch.head_dim,
            "intermediate_size": arch.intermediate_size, "vocab_size": arch.vocab_size,
            "experts": arch.num_experts or None, "experts_per_token": arch.experts_per_token or None,
            "sliding_layers": arch.num_sliding_layers, "sliding_window": arch.sliding_window,
            "context_length": arch.max_position_embeddings,
            "params_from_config": arch.param_count(),
            "active_params_from_config": arch.param_count(active=True) if arch.is_moe else None,
        })
        s["notes"] += list(arch.assumed)
        s["notes"] += params_disagree(info, arch)
    return s


def _summary_text(s: dict) -> str:
    def b(n):
        if not n:
            return "-"
        return f"{n / 1e9:.2f} B ({n:,})" if n >= 1e7 else f"{n:,}"

    rows = [("name", s["name"]), ("file kind", s["kind"])]
    if "layers" in s:
        rows += [("model type", s["model_type"]), ("layers", s["layers"]), ("hidden size", s["hidden_size"]),
                 ("attention heads", s["attention_heads"]), ("kv heads", s["kv_heads"]), ("head dim", s["head_dim"]),
                 ("ffn size", s["intermediate_size"]), ("vocab", s["vocab_size"]),
                 ("experts", f"{s['experts']} (top-{s['experts_per_token']})" if s["experts"] else "-"),
                 ("sliding layers", f"{s['sliding_layers']} (window {s['sliding_window']})"
                  if s["sliding_layers"] else "0"),
                 ("context", s["context_length"] or "-")]
    if s.get("layer_kinds") and set(s["layer_kinds"]) - {"full"}:
        rows += [("layer kinds", ", ".join(f"{n} {_KIND_WORDS.get(k, k)}" for k, n in s["layer_kinds"].items()))]
    if "kv_compressed" in s:
        c = s["kv_compressed"]
        rows += [("KV per token", f"{s['kv_bytes_per_token']:,} bytes in 16 bits (compressed rows, {c['row_layers_per_token']:g} "
                                  f"layers' worth, and indexer keys), beside {c['window_layers']} windows of {c['window']:,} tokens")]
    elif "kv_bytes_per_token" in s:
        rows += [("KV per token", f"{s['kv_bytes_per_token']:,} bytes in 16 bits ({s['kv_layers']} layers keep a cache)")]
    if s.get("recurrent_state_bytes_per_sequence"):
        per = s["recurrent_state_bytes_per_sequence"]
        rows += [("state per sequence", "; ".join(f"{rt} {v / 2**20:.2f} MiB" for rt, v in per.items())
                  + " (16-bit model; does not grow with the context)")]
    rows += [("params (file)", b(s["params"]))]
    if "params_from_config" in s:
        rows += [("params (config)", b(s["params_from_config"]))]
        if s.get("active_params_from_config"):
            rows += [("active params", b(s["active_params_from_config"]))]
    rows += [("weights", f"{s['weights_bytes']:,} bytes ({s['weights_gib']:.2f} GiB)" if s["weights_bytes"] else "-"),
             ("quantization", s["quantization"] or "-")]
    if s["tensor_types"]:
        rows += [("tensor types", ", ".join(f"{k}: {v}" for k, v in sorted(s["tensor_types"].items())))]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {_cell(v)}" for k, v in rows]
    lines += [f"note: {n}" for n in s["notes"]]
    return "\n".join(lines)


_KIND_WORDS = {"full": "global attention", "sliding": "sliding-window attention", "cross": "cross-attention",
               "none": "MLP-only"}


def _per_sequence(arch) -> dict:
    """What one sequence keeps in the cache, from the same formulas an estimate uses: keys and values
    per token, and the recurrent state per runtime (16-bit model)."""
    from ..catalog import get_catalog
    from ..scenario import _model_vars, _runtime_vars

    kinds: dict[str, int] = {}
    word = families.RECURRENT_KIND_WORDS.get(arch.recurrent_kind, "recurrent")
    for i, t in enumerate(arch.layer_types or ("full",) * arch.num_layers):
        label = t if t != "recurrent" else word
        if arch.recurrent_beside_attention and t in ("full", "sliding"):
            label = f"{t} + {word}"  # Falcon-H1: attention and the mixer side by side
        if arch.is_compressed and arch.compress_ratios[i]:  # DeepSeek V4: the window and a compressed cache
            r = arch.compress_ratios[i]
            label = f"window + 1/{r} compressed" + (" (indexed)" if r == families.CSA_RATIO else "")
        kinds[label] = kinds.get(label, 0) + 1
    out: dict = {"layer_kinds": kinds}
    cat = get_catalog()
    # a 16-bit cache; the runtime constants it may read at their declared defaults (catalogs/runtime_constants)
    defaults = {f"rt_{d.key}": float(d.data["default"]) for d in cat.runtime_constants if "default" in d.data}
    base = dict(defaults, **_model_vars(arch), act_bytes=2.0, kv_bits=16.0)
    kv_layers = arch.num_kv_full_layers + arch.num_kv_sliding_layers + arch.num_cross_layers
    v = cat.formulas.evaluate(base, ["kv_bytes_per_token_layer", "kv_cmp_bytes_per_token"])
    if arch.is_compressed:  # DeepSeek V4: the windows stop growing; a token adds compressed rows and indexer keys
        out["kv_bytes_per_token"] = round(v["kv_cmp_bytes_per_token"])
        out["kv_compressed"] = {"window_layers": kv_layers, "window": arch.sliding_window,
                                "row_layers_per_token": arch.compressed_entries_per_token}
    else:
        out["kv_bytes_per_token"] = int(v["kv_bytes_per_token_layer"] * kv_layers)
    out["kv_layers"] = kv_layers
    if arch.num_recurrent_layers:
        state = {}
        for rt in cat.runtimes:
            # no GPU here: every constant at its untiered value (the state's constants have no tiers)
            v = cat.formulas.evaluate({**base, **_runtime_vars(rt.data, "", float("inf"))}, ["recurrent_state_bytes_per_seq"])
            state[rt.key] = int(v["recurrent_state_bytes_per_seq"])
        out["recurrent_state_bytes_per_sequence"] = state
    return out


def default_catalog_dir() -> Path:
    """The user's own model catalog folder, which the built-in catalog plugin loads:
    ``$VRAMPLAN_CATALOG_DIR/models`` or ``<platformdirs user data dir>/catalogs/models``."""
    from vramplan.plugins.catalogs import user_catalog_dir

    return user_catalog_dir() / "models"


def _save_entry(key, info, arch, path: Path, catalog_dir, display_name, context_length, force) -> Path:
    import yaml

    from ..datafiles import validator

    ctx = context_length or arch.max_position_embeddings
    if not ctx:
        raise click.UsageError(f"{path}: the file states no context length; give --context-length")
    packed = any("packed" in n for n in info["notes"])  # stored elements are not parameters then
    params = info["params"] if info["params"] and not packed else arch.param_count()
    entry: dict = {
        "name": display_name or info["name"],
        "family": arch.model_type,
        "params_b": float(f"{params / 1e9:.6g}"),
    }
    if arch.is_moe:
        entry["active_params_b"] = float(f"{arch.param_count(active=True) / 1e9:.6g}")
    entry["context_length"] = int(ctx)
    entry["instruct"] = bool(re.search(r"instruct|chat|[-_]it\b", info["name"], re.I))
    entry["source"] = _source(path)
    notes = [f"imported from {info['kind']} file"]
    if info["weights_bytes"]:
        notes.append(f"weights {info['weights_bytes']} bytes")
    if info["quantization"]:
        notes.append(f"quantization {info['quantization']}")
    entry["notes"] = "; ".join(notes)
    entry["config"] = info["config"]
    doc = {"models": {key: entry}}
    errors = sorted(validator("catalog-models").iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        raise click.UsageError(f"cannot save {key}: {errors[0].message} at $.{'.'.join(map(str, errors[0].path))}")
    folder = catalog_dir or default_catalog_dir()
    target = folder / f"{key}.yaml"
    if target.exists() and not force:
        raise click.UsageError(f"--save-as {key}: {target} already exists (use --force to replace it)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(f"# Imported by `vramplan models import` from {getattr(path, 'name', path)}.\n"
                          + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    except OSError as exc:
        raise click.UsageError(f"--catalog-dir {folder}: cannot write there ({exc.strerror or exc})") from None
    return target


def _source(path) -> str:
    """Where a saved entry came from: a file URI, the URL, or the Hub page of the config."""
    text = str(path)
    if text.startswith("hf:"):
        from ..hub import parse

        ref = parse(text, "path")
        return (f"https://huggingface.co/{ref.repo}/blob/{ref.revision or 'main'}/"
                f"{ref.filename or 'config.json'}")
    if text.startswith(("http://", "https://")):
        return text
    return Path(path).resolve().as_uri()


# -- gpus -------------------------------------------------------------------------------------

@click.command("gpus")
@click.option("--vendor", help="only this vendor (nvidia, amd, apple, intel, …)")
@click.option("--min-memory", type=click.FloatRange(min=0), help="at least this much memory, GiB")
@click.option("--category", help="only this category (e.g. datacenter, consumer, workstation)")
@LIST_FORMAT
def gpus(vendor, min_memory, category, fmt) -> None:
    """List catalog GPUs."""
    import vramplan

    try:
        entries = vramplan.list_gpus()
    except VramplanError as exc:
        raise click.ClickException(exc.message) from None
    rows = []
    for g in entries:
        if vendor and str(g.get("vendor", "")).lower() != vendor.lower():
            continue
        if min_memory is not None and (g.get("memory") or 0) < min_memory:
            continue
        if category and str(g.get("category", "")).lower() != category.lower():
            continue
        rows.append(g)
    rows.sort(key=lambda g: (str(g.get("vendor", "")), g.get("memory") or 0, str(g.get("key"))))
    columns = [("key", "key"), ("label", "label"), ("vendor", "vendor"), ("memory", "memory (GiB)"),
               ("memory_bandwidth_gb_s", "bandwidth (GB/s)"), ("bf16_tflops", "bf16 TFLOPS"), ("tdp_w", "TDP (W)")]
    if any("category" in g for g in rows):
        columns.insert(3, ("category", "category"))
    _listing(rows, fmt, columns, "no GPUs match")


@click.command("runtimes")
@click.argument("key", required=False)
@LIST_FORMAT
def runtimes(key, fmt) -> None:
    """List the runtime profiles (serving / training stacks), or show one with every constant and its source."""
    import vramplan

    try:
        entries = vramplan.list_runtimes()
    except VramplanError as exc:
        raise click.ClickException(exc.message) from None
    if key is not None:
        match = [r for r in entries if r["key"] == key]
        if not match:
            raise click.UsageError(f"runtime: unknown runtime {key!r} (runtimes: {', '.join(r['key'] for r in entries)})")
        if fmt == "json":
            _json(match[0])
            return
        r = match[0]
        click.echo(f"{r['key']}: {r['label']}" + (f" (extends {r['extends']})" if r["extends"] else "")
                   + (f", defaults of {r['version']}" if r["version"] else ""))
        click.echo(r["description"])
        for line in _deployment_lines(r.get("deployment")):
            click.echo(line)
        rows = [{"constant": name, "value": c["value"], "unit": c["unit"],
                 "by GPU": "; ".join([f"{t['value']:g} " + _tier_words(t) for t in c.get("tiers", [])]
                                     + ([_follows_words(c["follows"])] if c.get("follows") else [])),
                 "accepts": accepted_range(c["accepts"]) if c.get("accepts") else "",
                 "source": c["source"] + (f" (accepts: {c['accepts']['source']})" if c.get("accepts") else "")}
                for name, c in r["constants"].items()]
        click.echo(_table(rows, [("constant", "constant"), ("value", "value"), ("unit", "unit"), ("by GPU", "by GPU / model"),
                                 ("accepts", "accepts"), ("source", "source")]))
        return
    if fmt == "json":
        _json(entries)
        return
    rows = []
    for r in entries:
        c = r["constants"]
        rows.append({"key": r["key"] + (" (default)" if r["default"] else ""), "label": r["label"],
                     "batching": "continuous" if r["continuous_batching"] else "static unless asked",
                     "max_num_seqs": c["max_num_seqs"]["value"] or "-",
                     "tokens/step": ("derived" if c.get("prefill_budget_derived", {}).get("value")
                                     else c["max_prefill_tokens"]["value"] or "-"),
                     "KV pool": (("derived" if c.get("mem_fraction_derived", {}).get("value")
                                  else f"{c['gpu_memory_utilization']['value']:g}") + " of "
                                 + ("free" if c["kv_pool_of_free"]["value"] else "total")) if c["kv_preallocate"]["value"] else "grows"})
    click.echo(_table(rows, [("key", "key"), ("label", "runtime"), ("batching", "batching"), ("max_num_seqs", "max seqs"),
                             ("tokens/step", "tokens/step"), ("KV pool", "KV pool")]))
    click.echo("(max seqs and tokens/step can depend on the GPU: `vramplan runtimes KEY` lists every constant, its tiers and its source;"
               " derived: the runtime's launcher sizes its budget from the GPU and the model, formula prefill_budget, or its"
               " server its memory share from the GPU, formula mem_fraction_heuristic)")


def _needs_words(needs: dict) -> str:
    words = []
    if needs.get("vendors"):
        words.append(", ".join(needs["vendors"]) + " GPUs")
    if needs.get("min_compute_capability"):
        words.append(f"NVIDIA from compute capability {needs['min_compute_capability']}")
    if needs.get("excluded_architectures"):
        words.append("not " + ", ".join(needs["excluded_architectures"]))
    return "; ".join(words) or "any GPU"


def _deployment_lines(dep: dict | None) -> list[str]:
    """A runtime's ``deployment`` block in words: where it runs, the KV formats it takes, what some weights
    formats need (and what the runtime dequantizes them to elsewhere), each with its source."""
    if not dep:
        return ["runs on: not stated (no deployment block: the planner searches it only where a plan names it)"]
    lines = [f"runs on: {_needs_words(dep)} ({dep['source']})",
             f"KV cache formats: {', '.join(dep.get('kv_cache_formats', ()))}"]
    for fmt, needs in (dep.get("formats") or {}).items():
        elsewhere = f"; elsewhere dequantized to {needs['dequantized_to']}" if needs.get("dequantized_to") else ""
        lines.append(f"{fmt} weights: {_needs_words(needs)}{elsewhere} ({needs['source']})")
    return lines


# -- plugins -----------------------------------------------------------------------------------

@click.command("plugins")
@LIST_FORMAT
def plugins(fmt: str) -> None:
    """List loaded plugins with versions, and any that failed to load."""
    from ..catalog import get_catalog

    cat = get_catalog()
    loaded = [{"name": p.name, "version": p.version, "builtin": p.builtin, "hooks": list(p.hooks)} for p in cat.host.plugins()]
    failed = [{"name": f.name, "version": f.version, "error": f.error} for f in cat.host.failures]
    if fmt == "json":
        _json({"plugins": loaded, "failed": failed})
        return
    click.echo(f"{'name':<32} {'version':<10} {'kind':<9} hooks")
    for p in loaded:
        kind = "built-in" if p["builtin"] else "plugin"
        click.echo(f"{p['name']:<32} {p['version']:<10} {kind:<9} {', '.join(p['hooks'])}")
    for f in failed:
        click.echo(f"{f['name']:<32} {f['version']:<10} FAILED    {f['error']}")


def _follows_words(rule: dict) -> str:
    """A constant's ``follows`` rule in a few words: what it becomes and when."""
    when = follows_mod.triggers_of(rule)
    where = f" on {', '.join(rule['vendors'])} GPUs" if rule.get("vendors") else ""
    return f"= {rule['expr']} where runtime_settings set {' or '.join(when)}{where}"


def _tier_words(t: dict) -> str:
    """When a runtime constant's tier applies, in words (GPUs or vendors, a memory bound, a model context, model types)."""
    if "below_gib" in t:
        return f"below {t['below_gib']:g} GiB"
    if "context_above" in t:
        return f"above {t['context_above']:g} tokens of context"
    if "model_types" in t:
        return "for " + ", ".join(t["model_types"])
    return "on " + ", ".join([*t.get("gpus", ()), *(f"{v} GPUs" for v in t.get("vendors", ()))])
