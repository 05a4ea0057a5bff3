"""``forecast export``: model.pt -> vehicle bundle (ONNX + bundle.json), optional parity check and registration."""

from __future__ import annotations

import argparse
import errno
import sys

from forecast.cli_args import int_at_least

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
MIN_OPSET = 18  # torch's exporter writes opset >= 18; asking for less silently got 18 (or a converter crash)


def _cmd_export(args: argparse.Namespace) -> int:
    from forecast.export.bundle import export_bundle
    from forecast.export.onnx_export import ExportError, ParityError

    try:
        export_bundle(args.model, args.out, fp16=args.fp16, verify=args.verify, opset=args.opset,
                      tracking_uri=args.tracking_uri, register_name=args.register, max_agents=args.max_agents,
                      progress=not args.quiet, int8=args.int8)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"forecast export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ParityError as exc:
        print(f"forecast export: parity check failed, bundle not written: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except ExportError as exc:
        print(f"forecast export: export failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:  # the output folder cannot be written
        print(f"forecast export: error: cannot write {args.out} ({exc.filename}: {exc.strerror or exc})", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError |
                                        FileExistsError) or exc.errno == errno.EROFS else EXIT_FAIL
    except Exception as exc:  # noqa: BLE001 - a scheduler needs a message and a non-zero code, not a traceback
        print(f"forecast export: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def register(sub) -> None:
    s = sub.add_parser("export", help="export model.pt to an ONNX bundle for the vehicle (optionally verified and registered)")
    s.add_argument("--model", required=True, help="model.pt written by `forecast train`")
    s.add_argument("--out", required=True, help="bundle directory (created; an older bundle there is replaced)")
    s.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx (fp16 compute, float32 I/O)")
    s.add_argument("--int8", action="store_true",
                   help="also write model_int8.onnx (int8 dynamically quantised MatMul/Gemm weights)")
    s.add_argument("--verify", action="store_true",
                   help="compare onnxruntime with torch at 1, 7, 64 and 256 agents (<= 1e-3 m fp32, 5e-2 m fp16)")
    s.add_argument("--register", metavar="NAME", help="register a model version NAME in the MLflow registry")
    s.add_argument("--tracking-uri", help="with --register: the MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                          "else sqlite:///mlflow.db); nothing is registered without --register")
    s.add_argument("--opset", type=int_at_least(MIN_OPSET, "--opset"),
                   help=f"ONNX opset, >= {MIN_OPSET} (default: the exporter's)")
    s.add_argument("--max-agents", type=int_at_least(1, "--max-agents"), default=256,
                   help="largest agent count the graph accepts (default 256)")
    s.set_defaults(func=_cmd_export)
