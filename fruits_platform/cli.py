"""`fruits-platform materialize`: register the classes of a data root and materialize the whole asset
graph through Dagster (recorded in $DAGSTER_HOME, so the UI shows the runs afterwards)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pydantic

from fruits_platform.notices import stderr_to
from fruits_platform.releases import DEFAULT_RELEASE
from fruits_platform.sources import DEFAULT_OUTPUT_ROOT


class CliError(Exception):
    pass


def _configure_environment(args) -> None:
    """The CLI's options become the same environment variables the code location reads."""
    os.environ["FRUITS_DATA_ROOT"] = args.data_root
    os.environ["FRUITS_OUTPUT_ROOT"] = args.output_root
    for name, value in [
        ("FRUITS_WEIGHTS", args.weights),
        ("FRUITS_IMAGE_SIZE", args.image_size),
        ("FRUITS_PCA_K", args.pca_k),
        ("FRUITS_PCA_VARIANCE", args.variance_threshold),
        ("FRUITS_PCA_K_RULE", args.k_rule),
    ]:
        if value is not None:
            os.environ[name] = str(value)
    if not os.getenv("DAGSTER_HOME"):
        home = Path(".dagster_home").resolve()
        home.mkdir(exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)


@contextmanager
def output_of_libraries_to(path: Path):
    """What Spark's JVM, its Python workers and TensorFlow print to this process's stderr goes to `path` (they
    write to the file descriptor, not to sys.stderr); the command's own messages still reach the terminal."""
    with open(path, "ab") as log, stderr_to(log):
        yield


def materialize_command(args) -> int:
    if not Path(args.data_root).exists() and not args.data_root.startswith("s3://"):
        raise CliError(f"data root not found: {args.data_root}")
    _configure_environment(args)

    from dagster import DagsterInstance

    from fruits_platform.concurrency import limit_outputs_pool, release_dead_runs, setup_lock
    from fruits_platform.runner import (
        MaterializationError,
        asset_names,
        latest_metadata,
        materialize_classes,
        register_classes,
    )

    wanted = [name.strip() for name in args.classes.split(",") if name.strip()] if args.classes else None
    home = os.environ["DAGSTER_HOME"]
    if not Path(home).is_dir():
        raise CliError(f"DAGSTER_HOME is not a folder: {home}")
    try:
        # One command at a time creates or opens the instance and registers classes; the runs then overlap.
        with setup_lock(home):
            instance = DagsterInstance.get()
            limit_outputs_pool(instance)
            for run_id in release_dead_runs(instance):
                print(f"run {run_id} of a fruits-platform process that is gone: marked failed, its pool slot freed")
            selected, refused = register_classes(instance, args.data_root, wanted)
    except MaterializationError as error:
        raise CliError(str(error)) from error
    log_path = Path(home) / "fruits-platform.log"
    try:
        # The code location's own job and resources; the runs' logs (and traces) stay in DAGSTER_HOME.
        with nullcontext() if args.verbose else output_of_libraries_to(log_path):
            results = materialize_classes(
                instance, None, selected, log_level="INFO" if args.verbose else "CRITICAL", app_model=args.app_model
            )
    except MaterializationError as error:
        raise CliError(str(error)) from error

    print(
        f"materialized {len(selected)} class(es) in {len(results)} run(s) (DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    )
    shown = [
        "images_ok",
        "images_rejected",
        "images_embedded",
        "images_reused",
        "pca_k",
        "explained_variance_total",
        "accuracy_logreg_pca",
        "accuracy_1nn_pca",
        "accuracy_logreg_scaled",
        "float32_top1_accuracy",
        "int8_top1_accuracy",
        "int8_not_built",
        "weights_source",
        "runtime_seconds",
    ]
    for asset_name in asset_names():
        metadata = latest_metadata(results, asset_name)
        if asset_name == "app_model" and not args.app_model:
            print(f"  {asset_name:<20} not requested (--app-model builds it)")
            continue
        if not metadata:
            print(f"  {asset_name:<20} not materialized (it needs two classes)")
            continue
        print(f"  {asset_name:<20} " + ", ".join(f"{k}={metadata[k]}" for k in shown if k in metadata))
        if "rejected_files" in metadata:
            print_rejected(metadata["rejected_files"].records, metadata["images_rejected"])
    for name, reason in refused.items():
        print(f"  skipped class folder {name!r}: {reason}")
    print(f"outputs: {args.output_root}")
    return 0


def print_rejected(records, count: int, shown: int = 10) -> None:
    """The first rejected files and why (names are untrusted: printed escaped)."""
    for record in records[:shown]:
        print(f"    rejected {record.data['file']!r}: {record.data['reason']}")
    if count > min(shown, len(records)):
        print(
            f"    ... {count - min(shown, len(records))} more: raw_images' rejected_files, or its status/reason columns"
        )


def identify_command(args) -> int:
    """The likeliest fruits for each photo, from the exported app model alone (LiteRT: no Spark, no TensorFlow)."""
    from fruits_platform.ml.identify import AppModel, AppModelError

    output_root = os.getenv("FRUITS_OUTPUT_ROOT", DEFAULT_OUTPUT_ROOT)
    try:
        model = AppModel.load(args.model or os.path.join(output_root, "app_model"), args.variant)
    except AppModelError as error:
        raise CliError(str(error)) from error
    unanswered = 0
    for photo in args.photos:
        try:
            with open(photo, "rb") as handle:
                top = model.identify(photo, handle.read(), args.top)
        except (OSError, ValueError) as error:
            unanswered += 1
            print(f"{photo}: not identified: {error.strerror if isinstance(error, OSError) else error}")
            continue
        print(f"{photo}: " + ", ".join(f"{name} {probability:.3f}" for name, probability in top))
    return 1 if unanswered else 0


def requirements_command(args) -> int:
    """Print the pinned dependencies (pyproject.toml) as a node of the EMR release needs them: the input of
    `bootstrap/lock.sh`, which freezes them into the release's lock file."""
    from fruits_platform.releases import node_requirements

    try:
        print("\n".join(node_requirements(args.release)))
    except ValueError as error:
        raise CliError(str(error)) from error
    return 0


def configurations_command(args) -> int:
    """Print the cluster's `--configurations` JSON for the EMR release (bootstrap/create_cluster.sh uses it)."""
    import json

    from fruits_platform.releases import cluster_configurations

    try:
        print(json.dumps(cluster_configurations(args.release)))
    except ValueError as error:
        raise CliError(str(error)) from error
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fruits-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    mat = commands.add_parser("materialize", help="register classes and materialize every asset")
    mat.add_argument("--data-root", required=True, help="Fruits-360 layout: DIR/{Training,Test}/<Class>/*.jpg")
    mat.add_argument("--output-root", required=True, help="assets are written to DIR/<asset_name>/")
    mat.add_argument("--classes", help='comma-separated class names, e.g. "Apple Golden 1,Banana" (default: all)')
    mat.add_argument("--weights", help="imagenet (default) | PATH | s3://... | random:<seed>")
    mat.add_argument("--image-size", type=int, help="model input size: 96, 128, 160, 192 or 224 (default)")
    mat.add_argument("--pca-k", type=int, help="fixed number of components (default: by variance threshold)")
    mat.add_argument("--variance-threshold", type=float, help="explained-variance target (default 0.95)")
    mat.add_argument("--k-rule", choices=["variance", "accuracy"], help="how k is chosen when --pca-k is not given")
    mat.add_argument("--app-model", action="store_true", help="also build app_model, the app's on-device model")
    mat.add_argument("--verbose", action="store_true", help="print the runs' logs, with the traces of errors")
    mat.set_defaults(handler=materialize_command)
    ident = commands.add_parser("identify", help="name the fruit in photos with the app's model (as the app does)")
    ident.add_argument("photos", nargs="+", metavar="PHOTO", help="JPEG, PNG or WEBP files, any size")
    ident.add_argument(
        "--model",
        help="the app_model folder or one of its .tflite files "
        "(default: $FRUITS_OUTPUT_ROOT/app_model, else fruits_output/app_model)",
    )
    ident.add_argument("--variant", choices=["float32", "int8"], default="float32", help="(with a folder)")
    ident.add_argument("--top", type=int, default=3, help="how many fruits to print per photo (default 3)")
    ident.set_defaults(handler=identify_command)
    reqs = commands.add_parser("emr-requirements", help="print the pinned dependencies of an EMR node")
    reqs.add_argument("--release", default=DEFAULT_RELEASE, help=f"EMR release label (default {DEFAULT_RELEASE})")
    reqs.set_defaults(handler=requirements_command)
    confs = commands.add_parser("emr-configurations", help="print an EMR cluster's --configurations JSON")
    confs.add_argument("--release", default=DEFAULT_RELEASE, help=f"EMR release label (default {DEFAULT_RELEASE})")
    confs.set_defaults(handler=configurations_command)
    commands.add_parser(
        "code-server",
        help="`dagster code-server start OPTIONS` that stops within seconds on SIGTERM, terminating its runs",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["code-server"]:  # every option is Dagster's (-h is its host): passed on untouched
        from fruits_platform.code_server import main as code_server

        return code_server(argv[1:])
    args = build_parser().parse_args(argv)
    if not getattr(args, "verbose", False):
        warnings.filterwarnings("ignore", module="dagster")  # beta/preview notices: noise for a CLI user
    # SIGTERM (a supervisor, `kill`) stops the command as Ctrl-C does: Dagster interrupts the step in progress
    # and ends its run, which frees the run's pool slot (killed outright, the run would hold it until the next
    # command finds it dead).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # anything unexpected still ends with one clear line
        print(f"error: {type(error).__name__}: {first_line(error)}", file=sys.stderr)
        return 1


def first_line(error: Exception) -> str:
    """The error's message in one line; a setting's validation error names the setting and what is wrong."""
    if isinstance(error, pydantic.ValidationError):
        return "; ".join(f"{error.title}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    return str(error).strip().splitlines()[0] if str(error).strip() else ""


if __name__ == "__main__":
    sys.exit(main())
