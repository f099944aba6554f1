"""report.json (the contract), report.md, and the terminal table."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from vgg_deploy.fileio import write_json, write_text


def _latency_cell(result: dict, batch: str) -> str:
    stats = result.get("latency_ms", {}).get(batch)
    return f"{stats['p50']:.2f}" if stats else "-"


def _speedup_cell(result: dict, batch: str) -> str:
    speedup = result.get("speedup") or {}
    eager, best = (speedup.get(key, {}).get(batch) for key in ("vs_pytorch", "vs_pytorch_best"))
    return f"{_fmt(eager, '.2f')}/{_fmt(best, '.2f')}" if eager or best else "-"


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def rows(report: dict) -> tuple[list[str], list[list[str]]]:
    batches = [str(b) for b in report["settings"]["batch_sizes"]]
    header = ["artifact", "backend", "precision", "status", "top-1", "agree", "max abs dlogit"]
    header += [f"p50 ms b{b}" for b in batches] + [f"img/s b{batches[-1]}", f"x eager/best b{batches[-1]}",
                                                    f"% peak b{batches[-1]}", "MB"]
    lines = []
    for r in report["results"]:
        acc = r.get("accuracy") or {}
        throughput = (r.get("throughput_ips") or {}).get(batches[-1])
        lines.append(
            [r["artifact"], r["backend"], r["precision"], r["status"], _fmt(acc.get("top1"), ".4f"),
             _fmt(acc.get("agreement"), ".4f"), _fmt(acc.get("max_abs_logit_diff"), ".3g")]
            + [_latency_cell(r, b) for b in batches]
            + [_fmt(throughput, ".1f"), _speedup_cell(r, batches[-1]),
               _fmt(((r.get("roofline") or {}).get(batches[-1]) or {}).get("pct_of_peak"), ".0f"),
               _fmt((r.get("bytes") or 0) / 1e6, ".0f") if r.get("bytes") else "-"]
        )
    return header, lines


def terminal_table(report: dict) -> Table:
    header, lines = rows(report)
    table = Table(title=f"benchmark (baseline: {report['baseline']})")
    for name in header:
        table.add_column(name, justify="left" if name in ("artifact", "backend", "precision", "status") else "right")
    for line in lines:
        table.add_row(*line)
    return table


def _int8_isa(found: list[str] | None) -> str:
    if found is None:
        return ""
    if not {"amx_int8", "avx512_vnni", "avx_vnni"} & set(found):
        return (f"; int8 instructions: {', '.join(found) or 'none'}, no VNNI: onnxruntime's int8 kernels may "
                "saturate here, so its INT8 figures may be below a VNNI machine's")
    return f"; int8 instructions: {', '.join(found)}"


def markdown(report: dict) -> str:
    header, lines = rows(report)
    machine = report["machine"]
    out = [
        f"# Benchmark: {report['run']}",
        "",
        f"Machine: {machine['cpu']} ({machine['cores']} cores)" + (f", GPU {machine['gpu']['name']}" if machine.get("gpu") else "")
        + _int8_isa(machine.get("int8_instructions")),
        f"Threads: {report['settings']['threads']}; images: {report['settings']['images']} ({report['settings']['data']})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    roofline = report.get("roofline") or {}
    if "peaks_gmacs" in roofline:
        peaks = ", ".join(f"{p} {v['gmacs']:.0f} ({v['through']})" for p, v in roofline["peaks_gmacs"].items())
        out += ["", f"Roofline: {roofline['macs_per_image'] / 1e9:.3f} G multiply-adds per image; measured GEMM "
                f"peaks, G multiply-adds/s: {peaks}. {roofline['explanation']}"]
    notes = [f"- {r['artifact']}: {r['status']}: {r['reason']}" for r in report["results"] if r.get("reason")]
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def write_report(folder: Path, report: dict) -> None:
    write_json(folder / "report.json", report)
    write_text(folder / "report.md", markdown(report))
