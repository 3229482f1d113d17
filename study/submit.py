"""Submit a study to a Ray cluster as a Ray job: `python -m study.submit [--address URL] STUDY [study.run options]`.

The job runs `python -m study.run STUDY ...` on the cluster's head node, with this checkout
uploaded as its working directory, and this command follows its output until it ends. Give
--out and --storage on storage every node mounts; relative paths are made absolute here, so
they must mean the same on the head node. Every study.run option is checked before submitting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from study import run, trackers
from study.cli import OneLineParser
from trainers.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# What the job does not need: the checkout's environment, results, run folders and history.
UPLOAD_EXCLUDES = [".git", ".venv", ".ray_runs", "results", "runs", "notebooks", "data", "**/__pycache__", "*.egg-info"]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = OneLineParser(prog="python -m study.submit", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--address", default=None,
                        help="the cluster's dashboard, e.g. http://HEAD_IP:8265 (default: RAY_ADDRESS, else local)")
    parser.add_argument("--python", default="python", help="the head node's Python command (default python)")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return without following it")
    return parser.parse_known_args(argv)


def job_arguments(study_argv: list[str]) -> list[str]:
    """study.run's arguments, checked, with --out and --storage made absolute."""
    options = run.parse_args(study_argv)
    names = run.studies_named(options.study, options)
    for name in names:
        run.plan(options, name)
    absolute = list(study_argv)
    for flag in ("--out", "--storage"):
        value = getattr(options, flag[2:])
        if value is None:
            continue
        if flag in absolute:
            absolute[absolute.index(flag) + 1] = str(Path(value).resolve())
        else:
            absolute = [a for a in absolute if not a.startswith(flag + "=")] + [flag, str(Path(value).resolve())]
    if options.out is None:  # study.run's default, made absolute: runs/<scale>/<study>, or runs/<scale> for all
        default = run.output_folder(options, names[0], False) if len(names) == 1 else Path("runs") / options.scale
        absolute += ["--out", str((ROOT / default).resolve())]
    return absolute


def submit_when_ready(client, entrypoint: str, runtime_env: dict, wait_s: float = 120.0) -> str:
    """Submit, waiting while a just-started head node has no job agent yet (Ray answers 500 then)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            print("the cluster's job agent is not up yet; retrying", flush=True)
            time.sleep(2.0)


def main(argv: list[str] | None = None) -> int:
    options, study_argv = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if options.address is not None and not options.address.startswith(("http://", "https://")):
            raise ConfigError(f"--address {options.address!r} is not the dashboard's URL; give "
                              f"http://HEAD_IP:8265 (study.run --address takes the HEAD_IP:6379 form)")
        arguments = job_arguments(study_argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(options.address)
    except (ConnectionError, RuntimeError, ValueError) as error:
        print(f"error: cannot reach the Ray cluster at {options.address or 'RAY_ADDRESS'} "
              f"({type(error).__name__}); start it with `ray start --head` or pass --address", file=sys.stderr)
        return 2
    entrypoint = " ".join([options.python, "-m", "study.run", *map(shlex.quote, arguments)])
    tracking = {name: os.environ[name] for name in trackers.ENVIRONMENT if name in os.environ}
    runtime_env = {"working_dir": str(ROOT), "excludes": UPLOAD_EXCLUDES,
                   "env_vars": {"STUDY_CODE_VERSION": run.code_version(), **tracking}}
    job_id = submit_when_ready(client, entrypoint, runtime_env)
    print(f"submitted job {job_id}: {entrypoint}", flush=True)
    if options.no_wait:
        print(f"follow it with: ray job logs --follow {job_id}")
        return 0

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(follow())
    status = client.get_job_status(job_id)
    print(f"job {job_id}: {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
