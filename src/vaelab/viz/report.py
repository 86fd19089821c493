"""`vaelab report RUN`: one self-contained HTML file about a run — what it is, its config,
the per-term training curves, every evaluation it has recorded, its network, the figures
in its folder and fresh samples — with every image inlined (data: URIs), so the file reads
offline, mailed or archived, with no server and nothing fetched."""

from __future__ import annotations

import base64
import html
import json
import stat
from pathlib import Path

import torch

from vaelab.files import atomic_write
from vaelab.runs.folder import RunFolder
from vaelab.viz.figures import plt, png_bytes

MAX_FIGURE_BYTES = 4 << 20
"""A figure of the run folder larger than this is named, not inlined."""

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figcaption{font-size:.8em;color:#555}
img,svg{max-width:100%;height:auto}"""


def write_report(run_dir: str | Path, out: str | Path, cache=None, samples: int = 64) -> Path:
    """Write the report of run folder ``run_dir`` to ``out`` (atomically); returns ``out``."""
    from vaelab.runs.load import load_run

    run = RunFolder(run_dir, writer=False)
    cfg, model = load_run(run_dir)
    records = run.read_metrics(torn_tail=True)
    parts = [f"<h1>{_e(Path(run_dir).resolve().name)}</h1>", _summary(cfg, model, records)]
    parts += ["<h2>Training curves</h2>", _curves(records)]
    parts += ["<h2>Evaluations</h2>", _evaluations(run.file("eval.json"))]
    parts += ["<h2>Network</h2>", _network(model, cfg)]
    if model.can("sample"):
        parts += [f"<h2>Samples</h2><p>{samples} draws of the model's prior (seed 0).</p>",
                  _samples(model, samples)]  # fmt: skip
    parts += ["<h2>Figures in the run folder</h2>", _figures(Path(run_dir))]
    parts += [
        "<h2>Config</h2>",
        f"<pre>{html.escape(run.file('config.toml').read_text(), quote=False)}</pre>",
    ]
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>vaelab report: '
            f"{_e(Path(run_dir).name)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")  # fmt: skip
    return atomic_write(Path(out), lambda f: f.write(page.encode()))


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    head = f"<tr>{head}</tr>" if any(header) else ""
    return f'<div style="overflow-x:auto"><table>{head}{body}</table></div>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "–" if v is None else str(v)


def _summary(cfg, model, records: list[dict]) -> str:
    n = sum(p.numel() for p in model.parameters())
    last = records[-1] if records else {}
    tested = [r["test_loss"] for r in records if r.get("test_loss") is not None]
    rows = [["family", f"{cfg.model.kind} / {cfg.model.arch}"], ["parameters", f"{n:,}"],
            ["data", f"{cfg.data.name}: {cfg.data.split} → {cfg.data.test_split}"],
            ["epochs", f"{last.get('epoch', 0)} of {cfg.train.epochs}"],
            ["last train loss", last.get("train_loss")], ["best test loss", min(tested, default=None)],
            ["training time (s)", last.get("seconds")],
            ["can", ", ".join(v for v in ("encode", "decode", "sample", "log_weights") if model.can(v))]]  # fmt: skip
    return _table(["", ""], rows)


def _curves(records: list[dict]) -> str:
    if not records:
        return "<p>No epochs recorded yet.</p>"
    terms = sorted({t for r in records for t in r.get("test_terms", {})})
    fig, axes = plt.subplots(1, 1 + bool(terms), figsize=(10 if terms else 5.5, 3.6), squeeze=False)
    ax = axes[0][0]
    ax.plot([r["epoch"] for r in records], [r["train_loss"] for r in records], label="train")
    tested = [r for r in records if r.get("test_loss") is not None]
    ax.plot([r["epoch"] for r in tested], [r["test_loss"] for r in tested], "--", label="test")
    ax.set_xlabel("epoch"), ax.set_ylabel("loss per image"), ax.legend(), ax.grid(alpha=0.3)
    for term in terms:
        rows = [r for r in records if term in r.get("test_terms", {})]
        axes[0][1].plot(
            [r["epoch"] for r in rows], [r["test_terms"][term] for r in rows], label=term
        )
    if terms:
        axes[0][1].set_xlabel("epoch"), axes[0][1].set_title("test terms", fontsize=9)
        axes[0][1].legend(fontsize=8), axes[0][1].grid(alpha=0.3)
    return _img(png_bytes(fig, dpi=100), "training curves")


def _evaluations(path: Path) -> str:
    """eval.json's records as tables, one per kind of record (likelihood, generation)."""
    if not path.exists():
        return "<p>None yet: <code>vaelab eval RUN</code> records one.</p>"
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"<p>{_e(path.name)} could not be read.</p>"
    out, flat = [], []
    for r in records if isinstance(records, list) else [records]:
        if not isinstance(r, dict):
            continue
        if isinstance(r.get("generation"), list):  # rows of `eval --generation`
            rows = [g for g in r["generation"] if isinstance(g, dict)]
            if rows:
                keys = list(rows[0])
                out.append(_table(keys, [[g.get(k) for k in keys] for g in rows]))
        else:
            flat.append(r)
    if flat:
        keys = list(
            dict.fromkeys(k for r in flat for k, v in r.items() if not isinstance(v, dict | list))
        )
        out.insert(0, _table(keys, [[r.get(k) for k in keys] for r in flat]))
    return "".join(out) or "<p>No evaluation records.</p>"


def _network(model, cfg) -> str:
    from vaelab.viz.architecture import draw_architecture

    fig = draw_architecture(model, cfg.model.image_shape, f"{cfg.model.kind}/{cfg.model.arch}")
    return _img(png_bytes(fig), "network")


@torch.no_grad()
def _samples(model, n: int) -> str:
    from vaelab.thesis.images import make_grid

    pictures = model.sample(n, generator=torch.Generator().manual_seed(0))  # (n, C, H, W)
    grid = make_grid(pictures.cpu(), 16, 1)  # (H', W', C) uint8
    fig, ax = plt.subplots(figsize=(8, 8 * grid.shape[0] / grid.shape[1] + 0.2))
    ax.imshow(grid[..., 0] if grid.shape[2] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_axis_off()
    return _img(png_bytes(fig, dpi=100), "samples")


def _figures(run_dir: Path) -> str:
    found = sorted(run_dir.glob("*.png"))
    if not found:
        return "<p>None yet: <code>vaelab plot RUN …</code> writes them here.</p>"
    out = []
    for path in found:
        body = _figure(path)
        out.append(f"<figure>{body}<figcaption>{_e(path.name)}</figcaption></figure>")
    return "".join(out)


def _figure(path: Path) -> str:
    """A PNG of the run folder inlined: only a regular file (never a link, a device or a
    FIFO: a shared folder must not smuggle other files into a report), at most
    MAX_FIGURE_BYTES read, and only if it is a PNG."""
    if path.is_symlink() or not stat.S_ISREG(path.lstat().st_mode):
        return "<p>(not a regular file: left out)</p>"
    with open(path, "rb") as f:
        data = f.read(MAX_FIGURE_BYTES + 1)
    if len(data) > MAX_FIGURE_BYTES:
        return f"<p>(over {MAX_FIGURE_BYTES:,} bytes: too large to inline)</p>"
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "<p>(not a PNG: left out)</p>"
    return _img(data, path.name)
