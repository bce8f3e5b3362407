"""The zoo table: each architecture of tests/helpers/zoo.py, each format (and each ONNX exporter), max abs error
against eager PyTorch and export time. Bounded: 12 models, one export per (architecture, exporter).

    .venv/bin/python scripts/zoo_table.py [--json]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))

from zoo import ZOO

from controlplane.errors import MlctlError
from controlplane.export.exporter import ExportRequest, export_model
from controlplane.model.signature import parse_tensor_spec

RUNS = [("torchscript", ("torchscript",), "auto"), ("onnx", ("onnx",), "torchscript"), ("onnx", ("onnx",), "dynamo"),
        ("onnx", ("onnx",), "auto")]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (arch, _cls) in ZOO.items():
            specs = tuple(parse_tensor_spec(i) for i in arch.inputs)
            for fmt, formats, exporter in RUNS:
                label = "torchscript (trace)" if fmt == "torchscript" else f"onnx ({exporter})"
                start = time.monotonic()
                try:
                    bundle = export_model(ExportRequest(f"zoo:{name}", specs, Path(tmp) / f"{name}-{fmt}-{exporter}",
                                                        arch.outputs, formats=formats, onnx_exporter=exporter, atol=arch.atol))
                    result = bundle.parity[fmt]
                    row = {"architecture": name, "format": label, "used": result["exporter"],
                           "max_abs_error": result["max_abs_error"], "outcome": "ok"}
                except MlctlError as exc:
                    row = {"architecture": name, "format": label, "used": "-", "max_abs_error": None,
                           "outcome": f"exit {exc.exit_code}: {exc.message[:90]}"}
                row["export_s"] = round(time.monotonic() - start, 2)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=2))
        return
    print("| architecture | format | exporter used | max abs error | export s | outcome |\n|---|---|---|---|---|---|")
    for r in rows:
        err = "-" if r["max_abs_error"] is None else f"{r['max_abs_error']:.2g}"
        print(f"| {r['architecture']} | {r['format']} | {r['used']} | {err} | {r['export_s']} | {r['outcome']} |")


if __name__ == "__main__":
    main()
