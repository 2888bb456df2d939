"""spark-submit command lines for ShopLens jobs, from a clone or from a built package.

A :class:`SubmitSpec` holds everything spark-submit needs besides the job and its run date. From a
clone it comes from the config (the jobs import ``shoplens`` from the local environment); from a
package (``make package``) it is read from ``dist/submit.json``, which also feeds the Airflow DAG,
so a hand-run submit and Airflow's submit are the same command.

    python -m shoplens.submit ingest_landing --run-date 2024-01-01 --env cluster [--package dist]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shoplens import cli
from shoplens.config import Config, default_conf_dir, load_config

SUBMIT_JSON = "submit.json"
# Spark settings that spark-submit takes as their own flags.
_FLAG_SETTINGS = {"spark.jars": "--jars", "spark.driver.memory": "--driver-memory"}


@dataclass(frozen=True)
class SubmitSpec:
    """Everything a spark-submit of a ShopLens job needs besides the job name and run date."""

    master: str
    env: str
    conf_dir: str
    jobs_dir: str
    conf: dict[str, str] = field(default_factory=dict)
    py_files: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()
    # Interpreter for the driver (client mode); executors use spark.pyspark.python from conf.
    driver_python: str = ""
    # Config overrides (--set key=value) the job itself must apply too.
    overrides: tuple[str, ...] = ()

    def application(self, job: str) -> str:
        return str(Path(self.jobs_dir) / f"{job}.py")

    def application_args(self, run_date: str) -> list[str]:
        args = ["--run-date", run_date, "--env", self.env, "--conf-dir", self.conf_dir]
        for item in self.overrides:
            args += ["--set", item]
        return args

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SubmitSpec:
        data = json.loads(text)
        data["py_files"] = tuple(data.get("py_files", ()))
        data["archives"] = tuple(data.get("archives", ()))
        data["overrides"] = tuple(data.get("overrides", ()))
        return cls(**data)


def spec_from_clone(
    cfg: Config, conf_dir: Path, project_root: Path, overrides: tuple[str, ...] = ()
) -> SubmitSpec:
    """Returns the spec for submitting from this clone, with ``shoplens`` installed locally;
    ``cfg`` must have been loaded with ``overrides``."""
    from shoplens.session import spark_conf

    return SubmitSpec(
        master=cfg.spark.master,
        env=cfg.env,
        conf_dir=str(conf_dir),
        jobs_dir=str(project_root / "jobs"),
        conf=spark_conf(cfg),
        driver_python=sys.executable,
        overrides=tuple(overrides),
    )


def load_package_spec(package_dir: Path) -> SubmitSpec:
    path = package_dir / SUBMIT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the package first with `make package`")
    return SubmitSpec.from_json(path.read_text())


def command(
    spec: SubmitSpec, job: str, run_date: str, spark_submit: str = "spark-submit", extra: Sequence[str] = ()
) -> list[str]:
    """Returns the spark-submit argv that runs ``job`` for ``run_date`` (client deploy mode), with
    ``extra`` arguments for the job after its usual ones."""
    argv = [spark_submit, "--master", spec.master, "--deploy-mode", "client", "--name", f"shoplens.{job} {run_date}"]
    argv += conf_args(spec.conf)
    if spec.py_files:
        argv += ["--py-files", ",".join(spec.py_files)]
    if spec.archives:
        argv += ["--archives", ",".join(spec.archives)]
    return argv + [spec.application(job), *spec.application_args(run_date), *extra]


def conf_args(conf: dict[str, str]) -> list[str]:
    """Spark settings as spark-submit arguments: their own flag where spark-submit has one."""
    argv: list[str] = []
    for key, value in sorted(conf.items()):
        argv += [_FLAG_SETTINGS[key], value] if key in _FLAG_SETTINGS else ["--conf", f"{key}={value}"]
    return argv


def submit_env(spec: SubmitSpec) -> dict[str, str]:
    """Returns the environment for running spark-submit: the driver's interpreter and SPARK_HOME."""
    from shoplens.cluster import spark_home

    env = dict(os.environ)
    env["SPARK_HOME"] = str(spark_home())
    if spec.driver_python:
        env["PYSPARK_DRIVER_PYTHON"] = spec.driver_python
        env.setdefault("PYSPARK_PYTHON", spec.driver_python)
    return env


def spark_submit_path() -> str:
    from shoplens.cluster import spark_home

    return str(spark_home() / "bin" / "spark-submit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="spark-submit a ShopLens job")
    parser.add_argument("job", help="job name, e.g. ingest_landing")
    parser.add_argument("--run-date", required=True, type=cli.run_date_arg)
    cli.add_env_args(parser)
    parser.add_argument("--package", type=Path, default=None, help="submit from a built package (dist/)")
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    parser.add_argument("--write-spec", type=Path, default=None, help="write the SubmitSpec JSON here and stop")
    argv = list(sys.argv[1:] if argv is None else argv)
    # After "--": the job's own arguments (e.g. -- --rewind-only for the backfill).
    ours, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = cli.parse(parser, ours)
    if args.package:
        spec = load_package_spec(args.package.resolve())
        spec = dataclasses.replace(spec, overrides=(*spec.overrides, *args.overrides))
    else:
        conf_dir = Path(args.conf_dir).resolve() if args.conf_dir else default_conf_dir()
        cfg = load_config(args.env, conf_dir, args.overrides)
        spec = spec_from_clone(cfg, conf_dir, conf_dir.parent, tuple(args.overrides))
    if args.write_spec:
        args.write_spec.write_text(spec.to_json())
        return 0
    argv_ = command(spec, args.job, args.run_date.isoformat(), spark_submit_path(), extra)
    if args.print:
        print(" ".join(argv_))
        return 0
    return subprocess.run(argv_, env=submit_env(spec), check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
